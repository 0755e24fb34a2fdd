using System.IO.Compression;
using System.Text.Json.Nodes;
using Microsoft.ML.SIDCo.Models;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>
/// A saved model that was edited or damaged is refused with <see cref="InvalidDataException"/> naming the file, before any
/// size in it is used to allocate.
/// </summary>
[Collection(FashionMnistCollection.Name)]
[Trait(Category.Name, Category.Training)]
public sealed class SavedModelTests(FashionMnistFixture data) : IDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"sidco-saved-{Guid.NewGuid():N}.zip");

    [Fact]
    public void AnEditedManifestIsRefusedByItsChecksum()
    {
        SaveSmallModel();
        // Swapping two key values used to relabel PredictedLabel without a word.
        EditManifest(m =>
        {
            var values = m["KeyValues"]!["Values"]!.AsArray();
            (values[0], values[1]) = (values[1]!.DeepClone(), values[0]!.DeepClone());
        }, fixChecksum: false);
        var e = Assert.Throws<InvalidDataException>(() => data.Ml.Extensions.LoadSIDCoModel(_path));
        Assert.Contains(_path, e.Message);
        Assert.Contains("manifest.json is corrupt (checksum mismatch)", e.Message);
    }

    [Theory]
    [InlineData("FeatureLength", "2000000000", "FeatureLength 2000000000 does not fit")]
    [InlineData("FeatureLength", "5000000", "FeatureLength 5000000 does not fit")]
    [InlineData("Classes", "-3", "Classes -3 does not fit")]
    [InlineData("Task", "\"Ranking\"", "Unknown task 'Ranking'")]
    [InlineData("Model", "\"resnet:depth=50\"", "not a built-in architecture")]
    public void ASizeOrNameEditedWithItsChecksumIsRefusedBeforeAnyAllocation(string field, string json, string expected)
    {
        // A manifest edited consistently (its checksum recomputed) still cannot make the loader allocate from its sizes:
        // 2e9 features used to make libtorch try to allocate a terabyte; other edits threw exceptions of other types.
        SaveSmallModel();
        EditManifest(m => m[field] = JsonNode.Parse(json), fixChecksum: true);
        long before = GC.GetTotalAllocatedBytes();
        var e = Assert.Throws<InvalidDataException>(() => data.Ml.Extensions.LoadSIDCoModel(_path));
        Assert.Contains(_path, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.True(GC.GetTotalAllocatedBytes() - before < 64 << 20, "the loader allocated from the edited size");
    }

    [Fact]
    public void DamagedWeightsAreRefusedNamingTheFile()
    {
        SaveSmallModel();
        using (var zip = ZipFile.Open(_path, ZipArchiveMode.Update))
        {
            var entry = zip.GetEntry("weights.bin")!;
            byte[] bytes;
            using (var s = entry.Open()) { using var m = new MemoryStream(); s.CopyTo(m); bytes = m.ToArray(); }
            bytes[bytes.Length / 2] ^= 0x40;
            entry.Delete();
            using var w = zip.CreateEntry("weights.bin").Open();
            w.Write(bytes);
        }
        var e = Assert.Throws<InvalidDataException>(() => data.Ml.Extensions.LoadSIDCoModel(_path));
        Assert.Contains(_path, e.Message);
        Assert.Contains("checksum mismatch", e.Message);
    }

    [Fact]
    public void AnUneditedModelStillLoads()
    {
        var model = SaveSmallModel();
        EditManifest(_ => { }, fixChecksum: true);
        using var loaded = data.Ml.Extensions.LoadSIDCoModel(_path);
        Assert.Equal(model.WeightsFingerprint, loaded.WeightsFingerprint);
    }

    private SIDCoTransformer SaveSmallModel()
    {
        var options = new SIDCoTrainer.Options { Model = SIDCoModels.Mlp(16), Epochs = 1, MaxStepsPerEpoch = 2 };
        var keys = data.Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data.Train);
        var model = data.Ml.Extensions.SIDCoTrainer(options).Fit(keys.Transform(data.Train));
        model.Save(_path);
        return model;
    }

    // Rewrites manifest.json through an edit; with fixChecksum its checksum entry is recomputed to match.
    private void EditManifest(Action<JsonObject> edit, bool fixChecksum)
    {
        using var zip = ZipFile.Open(_path, ZipArchiveMode.Update);
        var entry = zip.GetEntry("manifest.json")!;
        JsonObject manifest;
        using (var s = entry.Open()) manifest = JsonNode.Parse(s)!.AsObject();
        edit(manifest);
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(manifest.ToJsonString());
        entry.Delete();
        using (var w = zip.CreateEntry("manifest.json").Open()) w.Write(bytes);
        if (!fixChecksum) return;
        zip.GetEntry("manifest.xxh64")!.Delete();
        using var c = new StreamWriter(zip.CreateEntry("manifest.xxh64").Open());
        c.Write(System.IO.Hashing.XxHash64.HashToUInt64(bytes).ToString("x16", System.Globalization.CultureInfo.InvariantCulture));
    }

    public void Dispose() => File.Delete(_path);
}
