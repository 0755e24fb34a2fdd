namespace Microsoft.ML.SIDCo.Kernels;

/// <summary>
/// The hot loops of gradient compression, behind one interface so that a CPU (SIMD) backend and an
/// ILGPU backend can be swapped and tested against each other. Implementations know nothing about
/// what the numbers mean: they measure, select and scatter.
/// </summary>
/// <remarks>
/// Every method is deterministic: the same input gives the same output regardless of thread count,
/// and selections come out in ascending index order.
/// </remarks>
internal interface IGradientKernels : IScatterAddKernel
{
    /// <summary>A short name for reports ("cpu-simd", "ilgpu-cpu", "ilgpu-cuda", ...).</summary>
    string Name { get; }

    /// <summary>
    /// The length of the pieces the backend works on independently and combines in a fixed order; a buffer longer than one
    /// piece exercises the combining code too (a start-up rehearsal uses that).
    /// </summary>
    int PartitionLength { get; }

    /// <summary>
    /// Fused error feedback and statistics, in place: <c>residual += gradient</c> and |residual| measured in the
    /// same pass. Lanes whose sum is not finite are not written (the residual keeps its old value there)
    /// and are reported through <see cref="GradientStatistics.FirstNonFinite"/>.
    /// </summary>
    /// <param name="gradient">This step's gradient.</param>
    /// <param name="residual">The residual; becomes the accumulator gradient + residual.</param>
    /// <param name="kinds">Optional statistics.</param>
    /// <param name="candidateBound">When <paramref name="candidates"/> is given, every entry with |acc| &gt; this bound is appended to it
    /// (ascending), in the same pass.</param>
    /// <param name="candidates">Receives the candidates, or null.</param>
    /// <param name="tailBound">When finite, <see cref="GradientStatistics.Tail"/> holds the statistics of the magnitudes strictly above it
    /// (as <see cref="MeasureExceedances"/> of the accumulator would give).</param>
    GradientStatistics AccumulateAndMeasure(ReadOnlySpan<float> gradient, Span<float> residual, StatisticsKinds kinds,
        float candidateBound = float.PositiveInfinity, SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity);

    /// <summary>
    /// Measures |x| over <paramref name="values"/> in one pass, optionally compacting the entries above <paramref name="candidateBound"/>
    /// and measuring the exceedances of a finite <paramref name="tailBound"/> into <see cref="GradientStatistics.Tail"/>.
    /// </summary>
    GradientStatistics Measure(ReadOnlySpan<float> values, StatisticsKinds kinds, float candidateBound = float.PositiveInfinity,
        SparseBuffer? candidates = null, float tailBound = float.PositiveInfinity);

    /// <summary>Statistics of the magnitudes strictly above <paramref name="threshold"/>.</summary>
    ExceedanceStatistics MeasureExceedances(ReadOnlySpan<float> values, float threshold);

    /// <summary>Counts the entries with |x| &gt; <paramref name="threshold"/>.</summary>
    long CountAbove(ReadOnlySpan<float> values, float threshold);

    /// <summary>
    /// Selection with compaction: appends every (index, value) with |value| &gt; <paramref name="threshold"/>
    /// to <paramref name="output"/>, in ascending index order. Returns the number selected.
    /// </summary>
    int SelectAbove(ReadOnlySpan<float> values, float threshold, SparseBuffer output);

}

/// <summary>The one kernel a sparse exchange needs: adding the gathered selections into a dense buffer.</summary>
internal interface IScatterAddKernel
{
    /// <summary>Adds <c>values[j]</c> to <c>dense[indices[j]]</c> for every j (duplicates accumulate).</summary>
    void ScatterAdd(ReadOnlySpan<int> indices, ReadOnlySpan<float> values, Span<float> dense);
}
