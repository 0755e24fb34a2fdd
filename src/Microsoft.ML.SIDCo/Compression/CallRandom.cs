namespace Microsoft.ML.SIDCo.Compression;

/// <summary>
/// The random numbers of one compress call (splitmix64): a value type, so that drawing a call's samples
/// allocates nothing, and reproducible from its seed, so that a resumed run draws what the original drew.
/// </summary>
internal struct CallRandom
{
    private ulong _state;

    /// <summary>Starts the sequence at <paramref name="seed"/>.</summary>
    public CallRandom(ulong seed) => _state = seed;

    /// <summary>The next 32 random bits.</summary>
    public uint NextUInt32()
    {
        ulong z = unchecked(_state += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (uint)((z ^ (z >> 31)) >> 32);
    }

    /// <summary>A uniformly distributed integer in [0, <paramref name="maxExclusive"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxExclusive"/> is not positive.</exception>
    public int Next(int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        // Multiply-shift maps 32 random bits onto [0, max); redrawing the few products whose low half falls
        // below 2^32 mod max makes every value equally likely.
        uint max = (uint)maxExclusive;
        ulong product = (ulong)NextUInt32() * max;
        if ((uint)product < max)
        {
            uint rejectBelow = (0u - max) % max;
            while ((uint)product < rejectBelow) product = (ulong)NextUInt32() * max;
        }
        return (int)(product >> 32);
    }
}
