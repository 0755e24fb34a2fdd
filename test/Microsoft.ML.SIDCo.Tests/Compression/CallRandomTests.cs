using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Compression;

[Trait(Category.Name, Category.Unit)]
public class CallRandomTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(10)]
    [InlineData(600_000)]
    [InlineData(int.MaxValue)]
    public void NextStaysInRangeAndRepeatsFromTheSameSeed(int max)
    {
        var a = new CallRandom(42);
        var b = new CallRandom(42);
        for (int i = 0; i < 10_000; i++)
        {
            int x = a.Next(max);
            Assert.InRange(x, 0, max - 1);
            Assert.Equal(x, b.Next(max));
        }
    }

    [Fact]
    public void NextIsUniformAndSeedsGiveDifferentSequences()
    {
        // 200,000 draws over 10 values: each count within 3 % of 20,000 (about 8 standard deviations).
        var random = new CallRandom(7);
        var counts = new int[10];
        for (int i = 0; i < 200_000; i++) counts[random.Next(10)]++;
        Assert.All(counts, c => Assert.InRange(c, 19_400, 20_600));

        var other = new CallRandom(8);
        random = new CallRandom(7);
        Assert.NotEqual(Enumerable.Range(0, 20).Select(_ => random.Next(1000)).ToArray(),
            Enumerable.Range(0, 20).Select(_ => other.Next(1000)).ToArray());
    }

    [Fact]
    public void NextRejectsAnEmptyRange()
    {
        var random = new CallRandom(1);
        Assert.Throws<ArgumentOutOfRangeException>(() => random.Next(0));
    }
}
