using System.Reflection;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.SIDCo;

/// <summary>
/// ML.NET's cancellation, reached where ML.NET keeps it internal: <c>mlContext.CancelExecution()</c> marks the context and
/// every host registered on it as canceled (the internal <c>ICancelable</c>), and ML.NET's trainers poll that flag in
/// their loops. The SIDCo trainer polls the same flag every step.
/// </summary>
internal static class MlNetHost
{
    private static readonly PropertyInfo? s_isCanceled =
        typeof(IHost).Assembly.GetType("Microsoft.ML.Runtime.ICancelable")?.GetProperty("IsCanceled");
    private static readonly MethodInfo? s_cancel =
        typeof(MLContext).GetMethod("CancelExecution", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic,
            Type.EmptyTypes);

    /// <summary>Tells whether <paramref name="host"/> was canceled (always false where ML.NET lacks the flag).</summary>
    public static Func<bool> CancellationProbe(IHostEnvironment host)
    {
        if (s_isCanceled is not { } property || !property.DeclaringType!.IsInstanceOfType(host)) return static () => false;
        return () => (bool)property.GetValue(host)!;
    }

    /// <summary>Cancels everything running on <paramref name="ml"/>, as Microsoft.ML.Experimental's <c>CancelExecution</c> does.</summary>
    public static void CancelExecution(MLContext ml)
    {
        if (s_cancel is null) throw new PlatformNotSupportedException("This version of ML.NET has no MLContext.CancelExecution.");
        s_cancel.Invoke(ml, null);
    }
}

/// <summary>
/// The annotation kinds and values ML.NET's own scorers put on their output columns (ML.NET keeps its constants internal);
/// evaluators, <c>MapKeyToValue</c> and tools that look for a score column by kind read these names.
/// </summary>
internal static class MlNetAnnotations
{
    public const string KeyValues = "KeyValues";
    public const string SlotNames = "SlotNames";
    public const string IsNormalized = "IsNormalized";
    public const string ScoreColumnKind = "ScoreColumnKind";
    public const string ScoreValueKind = "ScoreValueKind";

    /// <summary>Values of <see cref="ScoreColumnKind"/>.</summary>
    public const string MulticlassClassification = "MulticlassClassification";
    public const string BinaryClassification = "BinaryClassification";
    public const string Regression = "Regression";

    /// <summary>Values of <see cref="ScoreValueKind"/>.</summary>
    public const string Score = "Score", Probability = "Probability", PredictedLabel = "PredictedLabel";
}
