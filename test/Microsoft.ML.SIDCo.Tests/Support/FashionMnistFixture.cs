using Microsoft.ML.SIDCo.TestHost;

namespace Microsoft.ML.SIDCo.Tests.Support;

/// <summary>3,000 training and 1,000 test images of Fashion-MNIST, loaded once for all trainer tests.</summary>
public sealed class FashionMnistFixture
{
    public FashionMnistFixture()
    {
        Ml = new MLContext(seed: 1);
        (Train, Test) = Scenarios.LoadData(Ml, 3000, 1000);
    }

    public MLContext Ml { get; }
    public IDataView Train { get; }
    public IDataView Test { get; }
}

[CollectionDefinition(Name)]
public sealed class FashionMnistCollection : ICollectionFixture<FashionMnistFixture>
{
    public const string Name = "Fashion-MNIST";
}
