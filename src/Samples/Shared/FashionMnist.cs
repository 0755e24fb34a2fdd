using System.Buffers.Binary;
using System.IO.Compression;

namespace Microsoft.ML.SIDCo.Samples;

/// <summary>One image example: 784 pixel intensities scaled to [0, 1] and a class label 0..9.</summary>
public sealed class ImageExample
{
    /// <summary>Pixel intensities in [0, 1], row-major.</summary>
    [Microsoft.ML.Data.VectorType(FashionMnist.Pixels)]
    public float[] Features { get; set; } = [];

    /// <summary>Class index 0..9.</summary>
    public uint Label { get; set; }
}

/// <summary>
/// Reads Fashion-MNIST from its IDX files (gzipped or not), as Debian's <c>dataset-fashion-mnist</c>
/// package installs them. Nothing is downloaded.
/// </summary>
public static class FashionMnist
{
    /// <summary>Image side length.</summary>
    public const int Side = 28;

    /// <summary>Pixels per image.</summary>
    public const int Pixels = Side * Side;

    /// <summary>Number of classes.</summary>
    public const int Classes = 10;

    /// <summary>Where Debian's package puts the files.</summary>
    public const string DebianDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>The class names, by label.</summary>
    public static IReadOnlyList<string> ClassNames { get; } =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>The data directory: <c>SIDCO_FASHION_MNIST_DIR</c> if set, else Debian's location.</summary>
    public static string DefaultDirectory =>
        Environment.GetEnvironmentVariable("SIDCO_FASHION_MNIST_DIR") is { Length: > 0 } d ? d : DebianDirectory;

    /// <summary>Header of an IDX file.</summary>
    public readonly record struct IdxHeader(byte DataType, int[] Dimensions);

    /// <summary>Loads the training (60,000) or test (10,000) split, optionally only the first <paramref name="limit"/> examples.</summary>
    public static ImageExample[] Load(bool train, int limit = int.MaxValue, string? directory = null)
    {
        directory ??= DefaultDirectory;
        string prefix = train ? "train" : "t10k";
        string images = Find(directory, $"{prefix}-images-idx3-ubyte");
        string labels = Find(directory, $"{prefix}-labels-idx1-ubyte");
        using var imageStream = Open(images);
        using var labelStream = Open(labels);
        var ih = ReadHeader(imageStream);
        var lh = ReadHeader(labelStream);
        if (ih.Dimensions.Length != 3 || ih.Dimensions[1] != Side || ih.Dimensions[2] != Side)
            throw new InvalidDataException($"'{images}' is not a 28x28 image file (dimensions {string.Join("x", ih.Dimensions)}).");
        if (lh.Dimensions.Length != 1 || lh.Dimensions[0] != ih.Dimensions[0])
            throw new InvalidDataException($"'{labels}' holds {string.Join("x", lh.Dimensions)} labels for {ih.Dimensions[0]} images.");
        int count = Math.Min(limit, ih.Dimensions[0]);
        var result = new ImageExample[count];
        var pixels = new byte[Pixels];
        for (int i = 0; i < count; i++)
        {
            imageStream.ReadExactly(pixels);
            int label = labelStream.ReadByte();
            if (label < 0) throw new EndOfStreamException($"'{labels}' ended early.");
            var features = new float[Pixels];
            for (int p = 0; p < Pixels; p++) features[p] = pixels[p] / 255f;
            result[i] = new ImageExample { Features = features, Label = (uint)label };
        }
        return result;
    }

    /// <summary>Reads the header of an IDX file (magic: two zero bytes, a type byte, a rank byte; then big-endian sizes).</summary>
    public static IdxHeader ReadHeader(Stream stream)
    {
        Span<byte> magic = stackalloc byte[4];
        stream.ReadExactly(magic);
        if (magic[0] != 0 || magic[1] != 0) throw new InvalidDataException("Not an IDX file (bad magic number).");
        var dims = new int[magic[3]];
        Span<byte> b = stackalloc byte[4];
        for (int d = 0; d < dims.Length; d++) { stream.ReadExactly(b); dims[d] = BinaryPrimitives.ReadInt32BigEndian(b); }
        return new IdxHeader(magic[2], dims);
    }

    /// <summary>Opens an IDX file, decompressing it when it is gzipped.</summary>
    public static Stream Open(string path)
    {
        var file = File.OpenRead(path);
        return path.EndsWith(".gz", StringComparison.Ordinal)
            ? new BufferedStream(new GZipStream(file, CompressionMode.Decompress), 1 << 16) : file;
    }

    /// <summary>Finds <paramref name="name"/> or <paramref name="name"/>.gz in <paramref name="directory"/>.</summary>
    public static string Find(string directory, string name)
    {
        foreach (var candidate in new[] { Path.Combine(directory, name), Path.Combine(directory, name + ".gz") })
            if (File.Exists(candidate)) return candidate;
        throw new FileNotFoundException($"Fashion-MNIST file '{name}' not found in '{directory}'. On Debian/Ubuntu install it with " +
            $"'apt-get install dataset-fashion-mnist' (./build.sh setup does this), or set SIDCO_FASHION_MNIST_DIR.");
    }
}
