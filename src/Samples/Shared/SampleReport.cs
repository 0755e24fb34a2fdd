using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.SIDCo.Training;
using ScottPlot;

namespace Microsoft.ML.SIDCo.Samples;

/// <summary>The report a sample writes: the top-level names are a stable contract for scripts.</summary>
public sealed record SampleReport(
    [property: JsonPropertyName("compressor")] string Compressor,
    [property: JsonPropertyName("density")] double Density,
    [property: JsonPropertyName("workers")] int Workers,
    [property: JsonPropertyName("transport")] string Transport,
    [property: JsonPropertyName("testAccuracy")] double TestAccuracy,
    [property: JsonPropertyName("logLoss")] double LogLoss,
    [property: JsonPropertyName("wallSeconds")] double WallSeconds,
    [property: JsonPropertyName("history")] IReadOnlyList<EpochMetrics> History)
{
    private static readonly JsonSerializerOptions s_json =
        new()
        {
            WriteIndented = true,
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull
        };

    /// <summary>Writes the JSON report and, beside it, a PNG plot of accuracy and bytes per epoch.</summary>
    public string Write(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, s_json));
        string png = Path.ChangeExtension(path, ".png");
        var plot = new Plot();
        double[] epochs = History.Select(e => (double)e.Epoch).ToArray();
        var acc = plot.Add.Scatter(epochs, History.Select(e => (e.ValidationAccuracy ?? e.Accuracy ?? 0) * 100).ToArray());
        acc.LegendText = History.Any(e => e.ValidationAccuracy is not null) ? "validation accuracy (%)" : "training accuracy (%)";
        var bytes = plot.Add.Scatter(epochs, History.Select(e => e.BytesPerStep / 1024).ToArray());
        bytes.LegendText = "KiB sent per step per worker";
        bytes.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Right.Label.Text = "KiB / step";
        plot.Axes.Left.Label.Text = "accuracy (%)";
        plot.Axes.Bottom.Label.Text = "epoch";
        plot.Title($"{Compressor} at density {Density}, {Workers} workers ({Transport}): test accuracy {TestAccuracy:P2}");
        plot.ShowLegend();
        plot.SavePng(png, 900, 500);
        return png;
    }
}
