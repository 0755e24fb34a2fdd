using Microsoft.ML.Data;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Compression;
using Microsoft.ML.SIDCo.Models;

namespace Microsoft.ML;

/// <summary>The catalog behind <c>mlContext.Extensions</c>: SIDCo's trainers and model loading.</summary>
public sealed class SIDCoCatalog
{
    internal SIDCoCatalog(MLContext context) => Context = context ?? throw new ArgumentNullException(nameof(context));

    /// <summary>The ML.NET context the catalog belongs to.</summary>
    public MLContext Context { get; }
}

/// <summary>Adds <c>mlContext.Extensions</c> (a C# 14 extension property, since <see cref="MLContext"/> is sealed).</summary>
public static class SIDCoMLContextExtensions
{
    /// <summary>The extension members on <see cref="MLContext"/>.</summary>
    /// <param name="mlContext">The ML.NET context.</param>
    extension(MLContext mlContext)
    {
        /// <summary>Trainers and helpers of Microsoft.ML.SIDCo.</summary>
        public SIDCoCatalog Extensions => new(mlContext);
    }
}

/// <summary>Catalog methods for SIDCo, in ML.NET's two-overload style.</summary>
public static class SIDCoCatalogExtensions
{
    /// <summary>Creates a <see cref="SIDCo.SIDCoTrainer"/> from full <see cref="SIDCo.SIDCoTrainer.Options"/>.</summary>
    /// <param name="catalog">The catalog (<c>mlContext.Extensions</c>).</param>
    /// <param name="options">Trainer options; validated here, with the offending option named in the exception.</param>
    public static SIDCoTrainer SIDCoTrainer(this SIDCoCatalog catalog, SIDCoTrainer.Options options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new SIDCoTrainer(catalog.Context, options);
    }

    /// <summary>Creates a <see cref="SIDCo.SIDCoTrainer"/> from the most used settings.</summary>
    /// <param name="catalog">The catalog (<c>mlContext.Extensions</c>).</param>
    /// <param name="labelColumnName">Label column (a key for classification).</param>
    /// <param name="featureColumnName">Feature column (known-size vector of Single).</param>
    /// <param name="model">Architecture; default <c>SIDCoModels.Mlp(128)</c>.</param>
    /// <param name="compressor">Gradient compressor.</param>
    /// <param name="density">Target density in (0, 1]; null: automatic (see <see cref="SIDCo.SIDCoTrainer.Options.Density"/>).</param>
    /// <param name="workers">In-process workers (ignored under mpirun).</param>
    /// <param name="epochs">Passes over the data; null: automatic (see <see cref="SIDCo.SIDCoTrainer.Options.Epochs"/>).</param>
    public static SIDCoTrainer SIDCoTrainer(this SIDCoCatalog catalog, string labelColumnName = SIDCo.SIDCoTrainer.Defaults.LabelColumnName,
        string featureColumnName = SIDCo.SIDCoTrainer.Defaults.FeatureColumnName, ModelDefinition? model = null,
        CompressorKind compressor = SIDCo.SIDCoTrainer.Defaults.Compressor, double? density = null,
        int workers = SIDCo.SIDCoTrainer.Defaults.Workers, int? epochs = null)
        => catalog.SIDCoTrainer(new SIDCo.SIDCoTrainer.Options
        {
            LabelColumnName = labelColumnName,
            FeatureColumnName = featureColumnName,
            Model = model,
            Compressor = compressor,
            Density = density,
            Workers = workers,
            Epochs = epochs,
        });

    /// <summary>Loads a model saved with <see cref="SIDCoTransformer.Save(string, bool)"/>.</summary>
    /// <param name="catalog">The catalog (<c>mlContext.Extensions</c>).</param>
    /// <param name="path">The saved model file.</param>
    /// <param name="customModel">The architecture, when the model was trained with <see cref="ModelDefinition.Custom"/>.</param>
    public static SIDCoTransformer LoadSIDCoModel(this SIDCoCatalog catalog, string path, ModelDefinition? customModel = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return SIDCoTransformer.Load(catalog.Context, path, customModel);
    }
}

/// <summary>Conversions of fitted pipelines that hold SIDCo models.</summary>
public static class SIDCoTransformerExtensions
{
    /// <summary>
    /// The fitted <paramref name="model"/> with every SIDCo transformer in it (in nested transformer chains too) replaced by
    /// its ML.NET-native ONNX form (<see cref="SIDCoTransformer.ToOnnxTransformer"/>): scoring then runs on ONNX Runtime
    /// and needs neither TorchSharp nor this package. <c>mlContext.Model.Save</c> writes the same form by itself.
    /// </summary>
    /// <param name="model">A fitted transformer or transformer chain.</param>
    public static ITransformer ToOnnxPipeline(this ITransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model switch
        {
            SIDCoTransformer sidco => sidco.ToOnnxTransformer(),
            IEnumerable<ITransformer> chain => new TransformerChain<ITransformer>(chain.Select(ToOnnxPipeline).ToArray()),
            _ => model,
        };
    }
}
