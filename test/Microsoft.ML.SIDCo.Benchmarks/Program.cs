using Microsoft.ML.SIDCo.Benchmarks;

// The paper-style benchmarks. Speed is measured here (ratios side by side in one run), never in tests.
//   compression [--elements N,..] [--densities d,..] [--data laplace,heavy,real] [--compressors a,b] [--runs 10] [--json FILE]
//   kernels     [--elements N,..] [--runs 20] [--accelerator preferred|cpu] [--json FILE]   (cpu-simd vs ILGPU, a GPU when present)
//   allreduce   [--ranks 2,4] [--elements N] [--densities d,..] [--runs 10] [--json FILE]
//   training    [--transport mpi|inprocess] [--workers 4] [--compressors ..] [--densities ..] [--epochs 5] [--density-warmup 200]
//               [--model convnet|convnet-small|wide-mlp] [--json FILE]
//   training-report --json FILE   (re-plots a training run from its JSON)
//   defaults    [--datasets iris,..] [--workers 1,2] [--seeds 1,2,3,4,5] [--json FILE]   (default options against ML.NET's trainers)
//   scoring     [--models mlp,convnet,lstm] [--rows 2000] [--engine-rows 500] [--runs 5] [--json FILE]   (TorchSharp vs the ONNX form)
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: Microsoft.ML.SIDCo.Benchmarks compression|kernels|allreduce|training|scoring|defaults [options]   " +
        "(see docs/benchmarks.md)");
    return 2;
}
var rest = new BenchArgs(args[1..]);
return args[0] switch
{
    "compression" => CompressionBenchmark.Run(rest),
    "kernels" => KernelBenchmark.Run(rest),
    "allreduce" => AllReduceBenchmark.Run(rest),
    "allreduce-worker" => AllReduceBenchmark.MpiWorker(rest),
    "training" => TrainingBenchmark.Run(rest),
    "training-worker" => TrainingBenchmark.Worker(rest),
    "training-report" => TrainingBenchmark.Report(rest),
    "scoring" => ScoringBenchmark.Run(rest),
    "defaults" => DefaultsBenchmark.Run(rest),
    "cluster-worker" => ClusterBenchmark.Worker(rest),
    "cluster-report" => ClusterBenchmark.Report(rest),
    "cluster-exchange" => ClusterExchangeBenchmark.Worker(rest),
    "cluster-exchange-report" => ClusterExchangeBenchmark.Report(rest),
    _ => Fail($"unknown benchmark '{args[0]}' (compression, kernels, allreduce, training, scoring, defaults; cluster runs through " +
        $"./build.sh bench cluster)"),
};

static int Fail(string message) { Console.Error.WriteLine(message); return 2; }
