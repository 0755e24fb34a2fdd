using System.Reflection;
using System.Reflection.Emit;
using System.Text.RegularExpressions;
using Microsoft.ML.SIDCo.Tests.Support;

namespace Microsoft.ML.SIDCo.Tests.Architecture;

/// <summary>
/// The layers of docs/architecture.md, checked on the built assembly: every type's references, in its signatures and in
/// its method bodies (the IL's type, method and field tokens), may reach only its own layer and those the table lets it use.
/// </summary>
[Trait(Category.Name, Category.Unit)]
public partial class LayeringTests
{
    private const string Root = "Microsoft.ML.SIDCo";

    [Fact]
    public void EveryLayerUsesOnlyTheLayersTheArchitectureTableAllows()
    {
        var allowed = ReadTable();
        Assert.Contains("Training", allowed.Keys);
        Assert.Contains("Kernels", allowed.Keys);
        var assembly = typeof(SIDCoTrainer).Assembly;
        var violations = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in assembly.GetTypes())
        {
            string from = Layer(type);
            // The compiler's helper types (<PrivateImplementationDetails>, collection-expression arrays) have no namespace.
            foreach (var used in References(type).Where(t => t.Assembly == assembly && Outermost(t).Namespace is not null))
            {
                string to = Layer(used);
                if (to != from && !allowed[from].Contains(to)) violations.Add($"{from} -> {to}: {type.FullName} uses {used.FullName}");
            }
        }
        Assert.True(violations.Count == 0, string.Join("\n", violations));
    }

    [Fact]
    public void TheCheckSeesAReferenceInAMethodBody()
    {
        // DataParallelTrainer (Training) builds a HybridCommunicator (Communication) inside a lambda: an IL-only reference.
        var trainer = typeof(SIDCo.Training.DataParallelTrainer);
        Assert.Contains(References(trainer).Concat(trainer.GetNestedTypes(All).SelectMany(References)),
            t => t == typeof(SIDCo.Communication.HybridCommunicator));
    }

    // The layer of a type: the namespace part after Microsoft.ML.SIDCo ("" for the root, where the catalog in Microsoft.ML belongs too).
    private static Type Outermost(Type type)
    {
        while (type.DeclaringType is { } outer) type = outer;
        return type;
    }

    private static string Layer(Type type)
    {
        string ns = Outermost(type).Namespace ?? "";
        return ns.StartsWith(Root + ".", StringComparison.Ordinal) ? ns[(Root.Length + 1)..].Split('.')[0] : "";
    }

    // The "may use" column of docs/architecture.md's layer table: layer -> layers (the root is "").
    private static Dictionary<string, HashSet<string>> ReadTable()
    {
        var table = new Dictionary<string, HashSet<string>>();
        foreach (var line in File.ReadLines(Path.Combine(MpiRunner.RepoRoot, "docs", "architecture.md")).Where(l =>
            l.StartsWith("| ", StringComparison.Ordinal)))
        {
            var cells = line.Split('|', StringSplitOptions.TrimEntries);
            if (cells.Length < 5 || cells[1].StartsWith("layer", StringComparison.Ordinal)
                || cells[1].StartsWith("---", StringComparison.Ordinal)) continue;
            string layer = cells[1].StartsWith("root", StringComparison.Ordinal) ? "" : Backticked().Match(cells[1]).Groups[1].Value;
            table[layer] = Backticked().Matches(cells[3]).Select(m => m.Groups[1].Value).ToHashSet();
        }
        return table;
    }

    [GeneratedRegex("`([^`]+)`")]
    private static partial Regex Backticked();

    private const BindingFlags All =
        BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    // Types named by a type's base, interfaces, fields, properties, method signatures and method bodies (with their generic arguments).
    private static IEnumerable<Type> References(Type type)
    {
        var found = new HashSet<Type>();
        void Add(Type? t)
        {
            if (t is null || !found.Add(t)) return;
            if (t.HasElementType) Add(t.GetElementType());
            if (t.IsGenericType) foreach (var a in t.GetGenericArguments()) Add(a);
        }
        Add(type.BaseType);
        foreach (var i in type.GetInterfaces()) Add(i);
        foreach (var f in type.GetFields(All)) Add(f.FieldType);
        foreach (var p in type.GetProperties(All)) Add(p.PropertyType);
        foreach (var m in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
        {
            if (m is MethodInfo mi) Add(mi.ReturnType);
            foreach (var p in m.GetParameters()) Add(p.ParameterType);
            foreach (var t in BodyReferences(m)) Add(t);
        }
        return found;
    }

    private static readonly Dictionary<short, OpCode> s_opCodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    // The declaring types of the members and the types the IL's tokens name.
    private static IEnumerable<Type> BodyReferences(MethodBase method)
    {
        var il = method.GetMethodBody()?.GetILAsByteArray();
        if (il is null) yield break;
        var typeArgs = method.DeclaringType?.IsGenericType == true ? method.DeclaringType.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            short code = il[i++];
            if (code == 0xFE) code = (short)(0xFE00 | il[i++]);
            var op = s_opCodes[code];
            switch (op.OperandType)
            {
                case OperandType.InlineField or OperandType.InlineMethod or OperandType.InlineTok or OperandType.InlineType:
                    {
                        int token = BitConverter.ToInt32(il, i);
                        i += 4;
                        MemberInfo? member = null;
                        try { member = method.Module.ResolveMember(token, typeArgs, methodArgs); }
                        catch (ArgumentException) { }
                        if (member is Type t) yield return t;
                        else if (member?.DeclaringType is { } d) yield return d;
                        break;
                    }
                case OperandType.InlineSwitch: i += 4 + 4 * BitConverter.ToInt32(il, i); break;
                case OperandType.InlineNone: break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar: i += 1; break;
                case OperandType.InlineVar: i += 2; break;
                case OperandType.InlineI8 or OperandType.InlineR: i += 8; break;
                default: i += 4; break;
            }
        }
    }
}
