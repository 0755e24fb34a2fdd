using Microsoft.ML;
using Microsoft.ML.SIDCo;
using Microsoft.ML.SIDCo.Communication;
using Microsoft.ML.SIDCo.TestHost;
using Microsoft.ML.SIDCo.Training;

// Scenarios the tests start under mpirun. Each rank prints lines the tests parse:
//   CHECK <rank> <name> OK|FAIL <detail>
// Exit code 0 means the scenario itself ran to its end.
string scenario = args.Length > 0 ? args[0] : "contract";
switch (scenario)
{
    case "contract":
        {
            using var comm = new MpiCommunicator();
            foreach (var r in CommunicatorContract.Run(comm))
                Console.WriteLine($"CHECK {comm.Rank} {r.Name} {(r.Ok ? "OK" : "FAIL")} {r.Detail}");
            // Large buffers are sent in pieces: force tiny pieces and check the sums.
            using var chunked = new MpiCommunicator { MaxElementsPerCall = 7 };
            var buf = Enumerable.Range(0, 100).Select(i => (float)i).ToArray();
            chunked.AllReduceSum<float>(buf);
            bool ok = buf.Select((v, i) => v == i * comm.Size).All(x => x);
            Console.WriteLine($"CHECK {comm.Rank} chunked-allreduce {(ok ? "OK" : "FAIL")} {buf[99]}");
            // Large blocks are gathered by our ring: force it for every size, in pieces of 7, and compare with MPI_Allgather.
            using var ring = new MpiCommunicator { RingAllGatherMinBytes = 0, MaxElementsPerCall = 7 };
            var floats = Enumerable.Range(0, 100).Select(i => comm.Rank * 1000f + i).ToArray();
            var byRing = new float[100 * comm.Size];
            var byMpi = new float[byRing.Length];
            ring.AllGather<float>(floats, byRing);
            comm.AllGather<float>(floats, byMpi);
            var halves = Enumerable.Range(0, 33).Select(i => (Half)(comm.Rank + i / 64f)).ToArray();
            var halvesByRing = new Half[33 * comm.Size];
            ring.AllGather<Half>(halves, halvesByRing);
            // A block at the default threshold takes the ring without forcing it.
            int large = MpiCommunicator.DefaultRingAllGatherMinBytes / sizeof(float);
            var largeAll = new float[large * comm.Size];
            comm.AllGather<float>(Enumerable.Range(0, large).Select(i => comm.Rank + i / (float)large).ToArray(), largeAll);
            bool largeOk = largeAll.Select((v, i) => v == i / large + i % large / (float)large).All(x => x);
            bool ringOk = largeOk && byRing.SequenceEqual(Enumerable.Range(0, byRing.Length).Select(i => i / 100 * 1000f + i % 100))
                && byRing.SequenceEqual(byMpi)
                && halvesByRing.SequenceEqual(Enumerable.Range(0, halvesByRing.Length).Select(i => (Half)(i / 33 + i % 33 / 64f)));
            Console.WriteLine($"CHECK {comm.Rank} ring-allgather {(ringOk ? "OK" : "FAIL")} {byRing[^1]} {halvesByRing[^1]}");
            Console.WriteLine($"CHECK {comm.Rank} launched-by-mpirun " +
                $"{(MpiCommunicator.IsLaunchedByMpirun && MpiCommunicator.LaunchedWorldSize == comm.Size ? "OK" : "FAIL")}");
            // All ranks of the test run on this one machine, so every one of them shares its cores with all the others.
            string onThisMachine = MpiCommunicator.LaunchedLocalSize == comm.Size ? "OK" : "FAIL";
            Console.WriteLine($"CHECK {comm.Rank} ranks-on-this-machine {onThisMachine} {MpiCommunicator.LaunchedLocalSize}");
            // Every instance is the world over the same links: a second Fit in this process must not probe again.
            var probed = CostModel.Probe(comm, repetitions: 3);
            using (var again = new MpiCommunicator())
                Console.WriteLine($"CHECK {comm.Rank} probe-once-per-process " +
                    $"{(ReferenceEquals(probed, CostModel.Probe(again)) ? "OK" : "FAIL")} {probed}");
            return 0;
        }
    case "contract-mpinet":
        {
            // The same contract over MPI.NET, under MPICH's mpiexec.
            using var comm = new MpiNetCommunicator();
            foreach (var r in CommunicatorContract.Run(comm))
                Console.WriteLine($"CHECK {comm.Rank} {r.Name} {(r.Ok ? "OK" : "FAIL")} {r.Detail}");
            bool launched = MpiNetCommunicator.IsLaunchedByMpiexec && MpiNetCommunicator.LaunchedWorldSize == comm.Size
                && MpiNetCommunicator.LaunchedRank == comm.Rank && SIDCoTrainer.Rank == comm.Rank;
            Console.WriteLine($"CHECK {comm.Rank} launched-by-mpiexec {(launched ? "OK" : "FAIL")} {comm.Transport}");
            return 0;
        }
    case "mismatch":
        {
            using var comm = new MpiCommunicator();
            try
            {
                _ = new GradientExchange(comm, 1000 + comm.Rank, ExchangeMode.Sparse);
                Console.WriteLine($"CHECK {comm.Rank} mismatch FAIL no exception");
            }
            catch (RankMismatchException e)
            {
                Console.WriteLine($"CHECK {comm.Rank} mismatch OK {e.Message}");
            }
            return 0;
        }
    case "disagree":
        {
            // Ranks that differ in an option which changes the collectives they make: each must name it instead of hanging.
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, 600, 10);
            var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            int rank = SIDCoTrainer.Rank;
            foreach (string option in new[] { "DenseWarmupSteps", "StopAfterSteps" })
            {
                var o = new SIDCoTrainer.Options { Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(8), Epochs = 1, Density = 0.01 };
                typeof(SIDCoTrainer.Options).GetField(option)!.SetValue(o, option == "StopAfterSteps" ? (object)(5L + rank) : 3 * rank);
                try
                {
                    ml.Extensions.SIDCoTrainer(o).Fit(view).Dispose();
                    Console.WriteLine($"CHECK {rank} disagree-{option} FAIL trained");
                }
                catch (RankMismatchException e)
                {
                    Console.WriteLine($"CHECK {rank} disagree-{option} OK {e.Message}");
                }
            }
            return 0;
        }
    case "stall":
        {
            // Trains with checkpoints; with a stop step, rank 2 stops itself there (SIGSTOP, as a swapped-out host behaves).
            string dir = args[1];
            long stopAt = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, 3000, 10);
            var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            int rank = SIDCoTrainer.Rank;
            var o = new SIDCoTrainer.Options
            {
                Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(32),
                Epochs = 2,
                MaxStepsPerEpoch = 50,
                BatchSize = 8,
                Density = 0.01,
                ExchangeMode = ExchangeMode.Sparse,
                CheckpointDirectory = dir,
                CheckpointInterval = 20,
                CollectiveTimeoutSeconds = 10,
                GradientHook = () => new StopSelf(new Microsoft.ML.SIDCo.Training.CompressionHook(
                    new Microsoft.ML.SIDCo.Training.CompressionHookOptions { Compression = new() { Density = 0.01 } }),
                    rank == 2 ? stopAt : -1),
            };
            var trainer = ml.Extensions.SIDCoTrainer(o);
            bool first = true;
            trainer.ProgressReported += (_, p) =>
            {
                if (first) Console.WriteLine($"CHECK {rank} first-progress OK {p.Epoch}:{p.StepInEpoch}");
                first = false;
            };
            trainer.Fit(view).Dispose();
            Console.WriteLine($"CHECK {rank} finished OK");
            return 0;
        }
    case "preempt":
        {
            // SIGTERM at one step, to this rank (target "rank") or to mpirun (target "mpirun", this rank's parent): every rank
            // must stop at the next step with a checkpoint. Without a step (-1), the run resumes and stops at step stopAfter.
            string dir = args[1];
            long signalAt = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
            string target = args.Length > 3 ? args[3] : "rank";
            long stopAfter = args.Length > 4 ? long.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 0;
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, 3000, 10);
            var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            int rank = SIDCoTrainer.Rank;
            var o = new SIDCoTrainer.Options
            {
                Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(32),
                Epochs = 1000, // far more than a test waits for: the run ends by the signal or by StopAfterSteps
                MaxStepsPerEpoch = 50,
                BatchSize = 8,
                Density = 0.01,
                ExchangeMode = ExchangeMode.Sparse,
                CheckpointDirectory = dir,
                CheckpointInterval = 100_000,
                StopAfterSteps = stopAfter,
                GradientHook = () => new SignalSelf(new Microsoft.ML.SIDCo.Training.CompressionHook(
                    new Microsoft.ML.SIDCo.Training.CompressionHookOptions { Compression = new() { Density = 0.01 } }),
                    rank == 1 ? signalAt : -1, target),
            };
            var trainer = ml.Extensions.SIDCoTrainer(o);
            bool first = true;
            trainer.ProgressReported += (_, p) =>
            {
                if (first) Console.WriteLine($"CHECK {rank} first-progress OK {p.Epoch}:{p.StepInEpoch}");
                first = false;
            };
            try
            {
                trainer.Fit(view).Dispose();
                Console.WriteLine($"CHECK {rank} finished OK");
            }
            catch (OperationCanceledException e)
            {
                var step = System.Text.RegularExpressions.Regex.Match(e.Message, @"canceled at step (\d+)").Groups[1].Value;
                Console.WriteLine($"CHECK {rank} preempted OK {step}");
                return 3;
            }
            return 0;
        }
    case "elastic":
        {
            // Elastic resume (args: dir phase). "kill": 4 ranks, rank 3 dies (SIGKILL) soon after the checkpoint of
            // step 100; "three": 3 ranks resume and stop at step 260; "five": 5 ranks finish; "baseline": 4 ranks, no stop.
            string dir = args[1], phase = args[2];
            var ml = new MLContext(seed: 1);
            var (train, test) = Scenarios.LoadData(ml, 12000, 2000);
            int rank = SIDCoTrainer.Rank;
            var o = new SIDCoTrainer.Options
            {
                Epochs = 10,
                Density = 0.01,
                ExchangeMode = ExchangeMode.Sparse,
                CheckpointDirectory = phase == "baseline" ? null : dir,
                CheckpointInterval = 50,
                StopAfterSteps = phase == "three" ? 260 : 0,
            };
            if (phase == "kill" && rank == 3)
            {
                // Dies (SIGKILL, as a failed machine) once the checkpoint of step 100 is on disk.
                new Thread(() =>
                {
                    while (!Directory.Exists(Path.Combine(dir, "step-0000000100"))) Thread.Sleep(5);
                    Console.WriteLine($"CHECK {rank} killing OK");
                    Console.Out.Flush();
                    System.Diagnostics.Process.Start("kill",
                        ["-KILL", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
                })
                { IsBackground = true }.Start();
            }
            var (_, accuracy, sidco) = Scenarios.TrainAndEvaluate(ml, o, train, test);
            var last = sidco.History.Epochs[^1];
            Console.WriteLine($"CHECK {rank} elastic-{phase} OK {accuracy:R} {sidco.History.Epochs.Count} {last.Loss:R}");
            return 0;
        }
    case "write-idv":
        {
            // Fashion-MNIST's training images as an ML.NET binary file (args: path rows), read back as a stream by "shard".
            var ml = new MLContext(seed: 1);
            var view = ml.Data.LoadFromEnumerable(Microsoft.ML.SIDCo.Samples.FashionMnist.Load(train: true, limit: int.Parse(args[2],
                System.Globalization.CultureInfo.InvariantCulture)));
            using (var file = File.Create(args[1])) ml.Data.SaveAsBinary(view, file, keepHidden: false);
            Console.WriteLine($"CHECK 0 written OK {new FileInfo(args[1]).Length}");
            return 0;
        }
    case "shard":
        {
            // Trains from a binary file streamed from disk (args: path on|off) and reports this rank's peak memory.
            var ml = new MLContext(seed: 1);
            var train = ml.Data.LoadFromBinary(args[1]);
            var test = ml.Data.LoadFromEnumerable(Microsoft.ML.SIDCo.Samples.FashionMnist.Load(train: false, limit: 2000));
            int rank = SIDCoTrainer.Rank;
            bool on = args[2] == "on";
            // The rows this rank holds, and the managed memory they take, read as the trainer reads them.
            var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            long before = GC.GetTotalMemory(forceFullCollection: true);
            var loaded = DataLoading.Read(keyed, "Features", "Label", Microsoft.ML.SIDCo.Training.TrainingTask.MulticlassClassification,
                null, () => false, on ? (rank, SIDCoTrainer.WorldSize) : null);
            long held = GC.GetTotalMemory(forceFullCollection: true) - before;
            Console.WriteLine($"CHECK {rank} rows-{args[2]} OK {loaded.Data.Count} {held}");
            GC.KeepAlive(loaded);
            loaded = null;
            var o = new SIDCoTrainer.Options { Epochs = 3, Density = 0.01, ShardData = on };
            var (_, accuracy, _) = Scenarios.TrainAndEvaluate(ml, o, train, test);
            var process = System.Diagnostics.Process.GetCurrentProcess();
            Console.WriteLine($"CHECK {rank} shard-{args[2]} OK {accuracy:R} {process.PeakWorkingSet64} " +
                $"{GC.GetGCMemoryInfo().HeapSizeBytes}");
            return 0;
        }
    case "transformer":
        {
            // The Transformer on the generated topic documents, one worker per rank (the test compares with 2 in-process workers).
            var ml = new MLContext(seed: 1);
            var (accuracy, fingerprint) = Scenarios.TrainTopicTransformer(ml, workers: 1);
            Console.WriteLine($"CHECK {SIDCoTrainer.Rank} transformer OK {accuracy:R} {fingerprint}");
            return 0;
        }
    case "overlap":
        {
            // The dense baseline with and without overlap, one worker per rank (the test compares with in-process workers).
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, 2000, 100);
            long on = Scenarios.TrainDense(ml, train, workers: 1, overlap: true);
            long off = Scenarios.TrainDense(ml, train, workers: 1, overlap: false);
            Console.WriteLine($"CHECK {SIDCoTrainer.Rank} overlap OK {on} {off}");
            return 0;
        }
    case "powersgd-dense-start":
        {
            // PowerSGD's dense start exchanges by the dense baseline's rank-ordered sums: bitwise its average on every rank.
            // MPI_Allreduce sums large vectors in its own order; how many entries it rounds differently shows the check can fail.
            using var comm = new MpiCommunicator();
            const int Rows = 1000, Columns = 1000, Bias = 1000, Length = Rows * Columns + Bias;
            ParameterSlice[] slices = [new("w", 0, Rows * Columns, [Rows, Columns]), new("b", Rows * Columns, Bias, [Bias])];
            var random = new Random(comm.Rank + 1);
            var gradient = Enumerable.Range(0, Length).Select(_ => random.NextSingle() * 2 - 1).ToArray();
            var byPowerSgd = (float[])gradient.Clone();
            var byDense = (float[])gradient.Clone();
            var byMpi = (float[])gradient.Clone();
            using (var powerSgd = new PowerSgdHook(rank: 1, denseSteps: 1))
            {
                powerSgd.Initialize(new GradientHookContext(comm, Length, slices));
                powerSgd.Reduce(byPowerSgd, step: 0);
            }
            using (var dense = new DenseAllReduceHook())
            {
                dense.Initialize(new GradientHookContext(comm, Length, slices));
                dense.Reduce(byDense, step: 0);
            }
            comm.AllReduceSum<float>(byMpi);
            int differ = 0;
            for (int i = 0; i < Length; i++) if (byMpi[i] / comm.Size != byDense[i]) differ++;
            bool ok = byPowerSgd.SequenceEqual(byDense)
                && byDense.Select((v, i) => Math.Abs(v * comm.Size - byMpi[i]) <= 1e-5f * comm.Size).All(x => x);
            Console.WriteLine($"CHECK {comm.Rank} powersgd-dense-start {(ok ? "OK" : "FAIL")} {differ}");
            return 0;
        }
    case "memory":
        {
            // Peak memory of a Fit with many in-process workers on a small model (args: workers).
            int workers = int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture);
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, Math.Max(600, workers * 8), 10);
            var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            var o = new SIDCoTrainer.Options
            {
                Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(3),
                Workers = workers,
                Epochs = 1,
                MaxStepsPerEpoch = 2,
                BatchSize = 4,
            };
            var watch = System.Diagnostics.Stopwatch.StartNew();
            ml.Extensions.SIDCoTrainer(o).Fit(view).Dispose();
            long peak = System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64;
            Console.WriteLine($"CHECK 0 memory OK {workers} {peak} {watch.Elapsed.TotalSeconds:F1}");
            return 0;
        }
    case "die":
        {
            using var comm = new MpiCommunicator();
            var buf = new float[1 << 16];
            for (int step = 0; ; step++)
            {
                if (comm.Rank == 1 && step == 3)
                {
                    Console.WriteLine($"CHECK {comm.Rank} dying OK at step {step}");
                    Console.Out.Flush();
                    Environment.Exit(3);
                }
                comm.AllReduceSum<float>(buf);
            }
        }
    case "train":
        {
            // The trainer under mpirun: the same user code as in-process, one worker per rank.
            var ml = new MLContext(seed: 1);
            var (train, test) = Scenarios.LoadData(ml, 3000, 1000);
            var options = Scenarios.SmallFashionMnist(workers: 1);
            var (_, accuracy, sidco) = Scenarios.TrainAndEvaluate(ml, options, train, test);
            int rank = SIDCoTrainer.Rank;
            Console.WriteLine($"CHECK {rank} accuracy OK {accuracy:R}");
            Console.WriteLine($"CHECK {rank} fingerprint OK {sidco.WeightsFingerprint}");
            Console.WriteLine($"CHECK {rank} transport OK {sidco.Info.Transport}/{sidco.Info.Workers}");
            return 0;
        }
    case "hybrid-contract":
        {
            // Two in-process workers inside every rank, seen as one flat group.
            using var mpi = new MpiCommunicator();
            using var group = new InProcessGroup(2);
            var lines = new List<string>[2];
            group.Run(local =>
            {
                var comm = new HybridCommunicator(local, mpi);
                lines[local.Rank] =
                    CommunicatorContract.Run(comm).Select(r => $"CHECK {comm.Rank} {r.Name} {(r.Ok ? "OK" : "FAIL")} {r.Detail}").ToList();
            });
            foreach (var l in lines.SelectMany(x => x)) Console.WriteLine(l);
            return 0;
        }
    case "hybrid-train":
        {
            var ml = new MLContext(seed: 1);
            var (train, test) = Scenarios.LoadData(ml, 3000, 1000);
            int rank = int.Parse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_RANK") ?? "0");
            foreach (bool hierarchical in new[] { false, true })
            {
                var options = Scenarios.SmallFashionMnist(workers: 1);
                options.WorkersPerRank = 2;
                options.HierarchicalExchange = hierarchical;
                var (_, accuracy, sidco) = Scenarios.TrainAndEvaluate(ml, options, train, test);
                string name = hierarchical ? "hierarchical" : "flat";
                Console.WriteLine($"CHECK {rank} {name}-accuracy OK {accuracy:R}");
                Console.WriteLine($"CHECK {rank} {name}-fingerprint OK {sidco.WeightsFingerprint}");
                Console.WriteLine($"CHECK {rank} {name}-layout OK " +
                    $"{sidco.Info.Transport}/{sidco.Info.Workers}/{sidco.History.Epochs[^1].BytesPerStep:F0}");
            }
            return 0;
        }
    case "score":
        {
            // Load a saved model in a fresh process and write the scores of the first test images.
            var ml = new MLContext(seed: 1);
            var model = ml.Extensions.LoadSIDCoModel(args[1]);
            var test =
                ml.Data.LoadFromEnumerable(Microsoft.ML.SIDCo.Samples.FashionMnist.Load(train: false,
                limit: int.Parse(args[3])));
            var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(test);
            var scores = Scenarios.Scores(ml, keys, model, test, int.Parse(args[3]));
            File.WriteAllBytes(args[2], System.Runtime.InteropServices.MemoryMarshal.AsBytes(scores.AsSpan()).ToArray());
            Console.WriteLine($"CHECK 0 scored OK {scores.Length}");
            return 0;
        }
    case "lifecycle":
        {
            // What user code sees under mpirun: which rank it is, which rank saves, and a cancel on one rank only.
            string dir = args[1];
            var ml = new MLContext(seed: 1);
            var (train, _) = Scenarios.LoadData(ml, 3000, 10);
            var view = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
            int rank = SIDCoTrainer.Rank;
            Console.WriteLine($"CHECK {rank} rank OK {SIDCoTrainer.Rank} {SIDCoTrainer.WorldSize} {SIDCoTrainer.IsPrimaryWorker}");
            var small = new SIDCoTrainer.Options { Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(8), Epochs = 1, MaxStepsPerEpoch = 3 };
            using var model = ml.Extensions.SIDCoTrainer(small).Fit(view);
            Console.WriteLine($"CHECK {rank} save-shared OK {model.Save(Path.Combine(dir, "shared.zip"))}");
            // Every rank writing one path must not collide: each writes its own temporary file, then renames.
            model.Save(Path.Combine(dir, "everyone.zip"), onEveryRank: true);
            using (var comm = new MpiCommunicator()) comm.Barrier();
            foreach (var name in new[] { "shared.zip", "everyone.zip" })
            {
                using var loaded = ml.Extensions.LoadSIDCoModel(Path.Combine(dir, name));
                bool same = loaded.WeightsFingerprint == model.WeightsFingerprint;
                Console.WriteLine($"CHECK {rank} load-{name} {(same ? "OK" : "FAIL")} {loaded.WeightsFingerprint}");
            }
            // Rank 1 cancels its own token; every rank must stop at the same step with OperationCanceledException.
            using var cts = rank == 1 ? new CancellationTokenSource(TimeSpan.FromSeconds(2)) : new CancellationTokenSource();
            var longRun =
                new SIDCoTrainer.Options
                {
                    Model = Microsoft.ML.SIDCo.Models.SIDCoModels.Mlp(32),
                    Epochs = 1000,
                    BatchSize = 25,
                    Density = 0.01,
                    CheckpointDirectory = Path.Combine(dir, "checkpoints")
                };
            try
            {
                ml.Extensions.SIDCoTrainer(longRun).Fit(view, cts.Token).Dispose();
                Console.WriteLine($"CHECK {rank} canceled FAIL the run ended without a cancel");
            }
            catch (OperationCanceledException e)
            {
                var step = System.Text.RegularExpressions.Regex.Match(e.Message, @"canceled at step (\d+)").Groups[1].Value;
                Console.WriteLine($"CHECK {rank} canceled {(step.Length > 0 ? "OK" : "FAIL")} {step}");
            }
            return 0;
        }
    case "conformance":
        {
            // The ML.NET conformance suite with the trainer's defaults, one worker per rank.
            foreach (var c in ConformanceCase.All)
                foreach (var r in Conformance.Run(c))
                    Console.WriteLine($"CHECK {SIDCoTrainer.Rank} {r.Name} {(r.Ok ? "OK" : "FAIL")} {r.Detail}");
            return 0;
        }
    default:
        Console.Error.WriteLine($"unknown scenario '{scenario}'");
        return 2;
}

// The built-in hook, and at one step this process stops itself (SIGSTOP): its peers then wait in the next collective.
internal sealed class StopSelf(Microsoft.ML.SIDCo.Training.IGradientHook inner, long step) : Microsoft.ML.SIDCo.Training.IGradientHook
{
    public void Initialize(Microsoft.ML.SIDCo.Training.GradientHookContext context) => inner.Initialize(context);

    public Microsoft.ML.SIDCo.Training.GradientHookStats Reduce(Span<float> gradient, long at)
    {
        if (at == step)
        {
            Console.WriteLine($"CHECK {SIDCoTrainer.Rank} stopping OK {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
            Console.Out.Flush();
            System.Diagnostics.Process.Start("kill",
                ["-STOP", Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)])
                .WaitForExit();
            Thread.Sleep(TimeSpan.FromSeconds(5));
        }
        return inner.Reduce(gradient, at);
    }

    public void SaveState(Stream stream) => inner.SaveState(stream);

    public void LoadState(Stream stream) => inner.LoadState(stream);

    public void Dispose() => inner.Dispose();
}

// The built-in hook, and at one step this rank sends SIGTERM to itself or to mpirun (its parent), as a scheduler would.
internal sealed class SignalSelf(Microsoft.ML.SIDCo.Training.IGradientHook inner, long step, string target)
    : Microsoft.ML.SIDCo.Training.IGradientHook
{
    private const int SignalHandlerGraceMs = 500;

    public void Initialize(Microsoft.ML.SIDCo.Training.GradientHookContext context) => inner.Initialize(context);

    public Microsoft.ML.SIDCo.Training.GradientHookStats Reduce(Span<float> gradient, long at)
    {
        if (at == step)
        {
            int pid = target == "mpirun" ? ParentProcessId() : Environment.ProcessId;
            Console.WriteLine($"CHECK {SIDCoTrainer.Rank} signalling OK {at} {target} {pid}");
            Console.Out.Flush();
            System.Diagnostics.Process.Start("kill", ["-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])
                .WaitForExit();
            // .NET runs SIGTERM handlers on its own signal thread: on a loaded machine (a CI run) it was once scheduled after
            // the next step's stop check, and the run stopped a step later. Half a second lets it run within this step.
            if (target == "rank") Thread.Sleep(SignalHandlerGraceMs);
        }
        return inner.Reduce(gradient, at);
    }

    // The PPid line of /proc/self/status.
    private static int ParentProcessId() => int.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("PPid:"))[5..].Trim(),
        System.Globalization.CultureInfo.InvariantCulture);

    public void SaveState(Stream stream) => inner.SaveState(stream);

    public void LoadState(Stream stream) => inner.LoadState(stream);

    public void Dispose() => inner.Dispose();
}
