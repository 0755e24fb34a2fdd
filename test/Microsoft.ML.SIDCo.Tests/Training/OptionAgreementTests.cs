using System.Reflection;
using Microsoft.ML.SIDCo.Tests.Support;
using Microsoft.ML.SIDCo.Training;

namespace Microsoft.ML.SIDCo.Tests.Training;

/// <summary>
/// Every option is either checked for agreement across ranks (and, where it changes the model, against a checkpoint) or
/// declared rank-local; a checkpoint written with other options is refused, naming them.
/// </summary>
[Collection(FashionMnistCollection.Name)]
public class OptionAgreementTests(FashionMnistFixture data) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"sidco-agree-{Guid.NewGuid():N}");

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void EveryOptionIsAgreedOrDeclaredRankLocal()
    {
        var agreed = new SIDCoTrainer.Options().ToAgreedOptions().Select(o => o.Name).ToList();
        Assert.Equal(agreed.Count, agreed.Distinct().Count());
        var fields = typeof(SIDCoTrainer.Options).GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name).ToList();
        var unclassified =
            fields.Where(f => !agreed.Contains($"Options.{f}") && !SIDCoTrainer.Options.RankLocalOptions.Contains(f)).ToList();
        Assert.True(unclassified.Count == 0,
            "options neither agreed across ranks nor declared rank-local: " + string.Join(", ", unclassified));
        Assert.All(agreed, name => Assert.Contains(name["Options.".Length..], fields));
        Assert.All(SIDCoTrainer.Options.RankLocalOptions, name => Assert.Contains(name, fields));
    }

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void AgreedValuesAreInvariantText()
    {
        var o = new SIDCoTrainer.Options { Density = 0.1, LearningRate = 1.0 / 3 };
        var values = o.ToAgreedOptions().ToDictionary(a => a.Name, a => a.Value);
        Assert.Equal("0.1", values["Options.Density"]);
        Assert.Equal((1.0 / 3).ToString("R", System.Globalization.CultureInfo.InvariantCulture), values["Options.LearningRate"]);
        Assert.Equal("auto", values["Options.Epochs"]);
        Assert.Equal("SidcoExponential", values["Options.Compressor"]);
        Assert.Equal("built-in", values["Options.GradientHook"]);
    }

    [Fact]
    [Trait(Category.Name, Category.Training)]
    public void AResumeWithAChangedDensityIsRefusedNamingIt()
    {
        // The density changes the model; a resume used to accept it without a word.
        var keys = data.Ml.Transforms.Conversion.MapValueToKey("Label");
        SIDCoTrainer.Options Options(double density, long stopAfter) => new()
        {
            Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(16),
            Epochs = 2,
            MaxStepsPerEpoch = 10,
            Density = density,
            CheckpointDirectory = _dir,
            CheckpointInterval = 5,
            StopAfterSteps = stopAfter,
        };
        keys.Append(data.Ml.Extensions.SIDCoTrainer(Options(0.01, stopAfter: 5))).Fit(data.Train);
        var e = Assert.Throws<CheckpointException>(() => keys.Append(data.Ml.Extensions.SIDCoTrainer(Options(0.02, 0))).Fit(data.Train));
        Assert.Contains("Options.Density = 0.01 there, 0.02 now", e.Message);
        // The options a run may change when it resumes (here StopAfterSteps) are not held against it.
        var resumed = keys.Append(data.Ml.Extensions.SIDCoTrainer(Options(0.01, 0))).Fit(data.Train);
        Assert.Equal(2, resumed.LastTransformer.History.Epochs.Count);
    }

    [Fact]
    [Trait(Category.Name, Category.Unit)]
    public void ACheckpointDirectoryThatCannotBeWrittenIsRefusedBeforeTraining()
    {
        // A file where the directory should be was found only at the first checkpoint.
        Directory.CreateDirectory(_dir);
        string file = Path.Combine(_dir, "not-a-directory");
        File.WriteAllText(file, "");
        var o = new SIDCoTrainer.Options
        {
            Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(8),
            Epochs = 1,
            MaxStepsPerEpoch = 2,
            CheckpointDirectory = file
        };
        var keys = data.Ml.Transforms.Conversion.MapValueToKey("Label");
        var e = Assert.Throws<ArgumentException>(() => keys.Append(data.Ml.Extensions.SIDCoTrainer(o)).Fit(data.Train));
        Assert.Equal("CheckpointDirectory", e.ParamName);
        Assert.Contains(file, e.Message);
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}
