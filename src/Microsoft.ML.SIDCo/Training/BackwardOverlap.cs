using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.SIDCo.Training;

/// <summary>
/// A hook that can reduce the gradient bucket by bucket while backward still runs, as PyTorch DDP does: the trainer hands it
/// contiguous ranges of the flat gradient in reverse layer order as soon as their layers' gradients are complete.
/// </summary>
public interface IBucketedGradientHook : IGradientHook
{
    /// <summary>
    /// Averages <paramref name="values"/> (the flat gradient's entries from <paramref name="offset"/> on) over the workers, in
    /// place. Collective: every worker passes the same ranges in the same order. Called on the exchange thread.
    /// </summary>
    void ReduceBucket(Memory<float> values, int offset, long step);

    /// <summary>Called after the last range of a step: the step's statistics (as <see cref="IGradientHook.Reduce"/> returns).</summary>
    GradientHookStats CompleteStep(long step);
}

/// <summary>
/// Runs a bucketed hook's exchange beside backward. An identity autograd function on the input of every leaf module with
/// parameters reports, during backward, that the module's parameter gradients are complete (autograd accumulates them before
/// it moves on to the module's input). Buckets of about <c>bucketBytes</c> (the first one at most 1 MiB, as in DDP) in reverse
/// parameter order are gathered as they complete and exchanged in order on a thread of this worker's own; what backward
/// never reports (the first layer, whose input needs no gradient) is gathered when backward returns. The sums are the same
/// as a whole-vector exchange's, so the model is bitwise the same.
/// </summary>
internal sealed class BackwardOverlap : IDisposable
{
    private const long FirstBucketBytes = 1 << 20;

    private readonly ParameterSet _parameters;
    private readonly IBucketedGradientHook _hook;
    private readonly float[] _gradient;
    private readonly (int FirstParameter, int LastParameter, int Offset, int Count)[] _buckets;
    private readonly int[] _bucketOf;       // parameter -> bucket
    private readonly int[][] _moduleParameters;
    private readonly int[] _pendingParameters; // per bucket, this step
    private readonly int[] _uses;              // per module, this step's forward calls that need gradients
    private readonly List<Action> _removeHooks = [];
    private readonly object _gate = new();
    private readonly Thread _thread;
    private int _launched, _done, _generation; // buckets launched (in order) and exchanged this step
    private long _step;
    private Exception? _failure;
    private bool _disposed;

    public BackwardOverlap(nn.Module model, ParameterSet parameters, IBucketedGradientHook hook, float[] gradient, long bucketBytes)
    {
        _parameters = parameters;
        _hook = hook;
        _gradient = gradient;
        var slices = parameters.Slices;
        _buckets = [.. Plan(slices, bucketBytes)];
        _bucketOf = new int[slices.Count];
        for (int b = 0; b < _buckets.Length; b++)
            for (int p = _buckets[b].FirstParameter; p <= _buckets[b].LastParameter; p++) _bucketOf[p] = b;
        _pendingParameters = new int[_buckets.Length];

        // Leaf modules whose parameters the set holds, and the identity on their input.
        var index = new Dictionary<IntPtr, int>();
        for (int i = 0; i < slices.Count; i++) index[parameters.Parameter(i).Handle] = i;
        var owned = new List<int[]>();
        foreach (var module in model.modules())
        {
            var own = module.parameters(recurse: false).Select(p => index.TryGetValue(p.Handle, out int i) ? i : -1).Where(i => i >= 0)
                .ToArray();
            if (own.Length == 0 || module is not nn.Module<Tensor, Tensor> leaf) continue;
            int moduleIndex = owned.Count;
            owned.Add(own);
            var remover = leaf.register_forward_pre_hook((_, input) => Mark(input, moduleIndex));
            _removeHooks.Add(remover.remove);
        }
        _moduleParameters = [.. owned];
        _uses = new int[owned.Count];
        _thread = new Thread(ExchangeLoop) { IsBackground = true, Name = "SIDCo gradient exchange" };
        _thread.Start();
    }

    /// <summary>
    /// The buckets in exchange order: parameters in reverse order, a bucket closed once it holds
    /// <paramref name="bucketBytes"/> (the first one at most 1 MiB); a parameter is never split.
    /// </summary>
    public static IReadOnlyList<(int FirstParameter, int LastParameter, int Offset, int Count)> Plan(
        IReadOnlyList<ParameterSlice> slices, long bucketBytes)
    {
        var buckets = new List<(int, int, int, int)>();
        int last = slices.Count - 1;
        long bytes = 0, cap = Math.Min(FirstBucketBytes, bucketBytes);
        for (int i = slices.Count - 1; i >= 0; i--)
        {
            bytes += slices[i].Count * (long)sizeof(float);
            if (bytes >= cap || i == 0)
            {
                buckets.Add((i, last, slices[i].Offset, slices[last].Offset + slices[last].Count - slices[i].Offset));
                last = i - 1;
                bytes = 0;
                cap = bucketBytes;
            }
        }
        return buckets;
    }

    /// <summary>The buckets' (offset, count) in exchange order.</summary>
    public IReadOnlyList<(int Offset, int Count)> Buckets => [.. _buckets.Select(b => (b.Offset, b.Count))];

    /// <summary>Buckets launched while backward ran in the last step (the rest went after it).</summary>
    public int LaunchedDuringBackward { get; private set; }

    /// <summary>Arms the next step: every bucket waits for all its parameters.</summary>
    public void BeginStep(long step)
    {
        lock (_gate)
        {
            _step = step;
            _generation++;
            _launched = _done = 0;
            Array.Clear(_uses);
            for (int b = 0; b < _buckets.Length; b++) _pendingParameters[b] = _buckets[b].LastParameter - _buckets[b].FirstParameter + 1;
            _failure = null;
        }
    }

    /// <summary>After backward: gathers and launches what backward did not report, waits for every exchange, returns the stats.</summary>
    public GradientHookStats EndBackward()
    {
        lock (_gate)
        {
            LaunchedDuringBackward = _launched;
            for (int b = 0; b < _buckets.Length; b++) _pendingParameters[b] = 0;
            LaunchReady();
            while (_done < _buckets.Length && _failure is null) Monitor.Wait(_gate);
            if (_failure is { } failure) throw new InvalidOperationException("The gradient exchange failed: " + failure.Message, failure);
        }
        return _hook.CompleteStep(_step);
    }

    // The forward pre-hook: the identity goes on an input that carries gradients back.
    private Tensor Mark(Tensor input, int module)
    {
        if (!input.requires_grad) return input;
        lock (_gate) _uses[module]++;
        return GradientsReady.apply(input, this, module);
    }

    // Called by the autograd function during backward (on the backward thread). A module called more than once in the
    // forward pass gets gradients from each call: its parameters wait for the end of backward.
    internal void ModuleDone(int module)
    {
        lock (_gate)
        {
            if (_uses[module] != 1) return;
            _uses[module] = 0;
            foreach (int p in _moduleParameters[module]) _pendingParameters[_bucketOf[p]]--;
            LaunchReady();
        }
    }

    // Launches, in order, every bucket whose parameters are all complete; buckets go out in the same order on every worker.
    private void LaunchReady()
    {
        while (_launched < _buckets.Length && _pendingParameters[_launched] <= 0)
        {
            var b = _buckets[_launched];
            for (int p = b.FirstParameter; p <= b.LastParameter; p++) _parameters.GatherGradient(p, _gradient);
            _launched++;
            Monitor.PulseAll(_gate);
        }
    }

    // Exchanges the launched buckets in order. A failed bucket ends the step's exchanges (EndBackward rethrows it); the next
    // BeginStep starts over.
    private void ExchangeLoop()
    {
        int generation = -1, next = 0;
        bool failed = false;
        while (true)
        {
            int bucket;
            long step;
            lock (_gate)
            {
                while (true)
                {
                    if (_disposed) return;
                    if (generation != _generation) { generation = _generation; next = 0; failed = false; }
                    if (!failed && next < _launched) break;
                    Monitor.Wait(_gate);
                }
                bucket = next;
                step = _step;
            }
            try
            {
                var b = _buckets[bucket];
                _hook.ReduceBucket(_gradient.AsMemory(b.Offset, b.Count), b.Offset, step);
            }
            catch (Exception e)
            {
                lock (_gate) { _failure = e; failed = true; Monitor.PulseAll(_gate); }
                continue;
            }
            lock (_gate)
            {
                _done++;
                next++;
                Monitor.PulseAll(_gate);
            }
        }
    }

    public void Dispose()
    {
        lock (_gate) { _disposed = true; Monitor.PulseAll(_gate); }
        _thread.Join();
        foreach (var remove in _removeHooks) remove();
    }

    /// <summary>The identity on a module's input whose backward reports that the module's parameter gradients are complete.</summary>
    private sealed class GradientsReady : autograd.SingleTensorFunction<GradientsReady>
    {
        private const string OverlapKey = "overlap", ModuleKey = "module";

        public override string Name => "SIDCoGradientsReady";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_data(OverlapKey, vars[1]);
            ctx.save_data(ModuleKey, vars[2]);
            return ((Tensor)vars[0]).view_as((Tensor)vars[0]);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            ((BackwardOverlap)ctx.get_data(OverlapKey)).ModuleDone((int)ctx.get_data(ModuleKey));
            return [grad_output, null!, null!];
        }
    }
}
