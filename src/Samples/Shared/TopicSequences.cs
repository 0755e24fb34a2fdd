using Microsoft.ML.Data;

namespace Microsoft.ML.SIDCo.Samples;

/// <summary>
/// Generated "documents" for sequence classification, so that nothing is downloaded: each is <see cref="Steps"/> token ids
/// from a vocabulary of <see cref="Vocabulary"/>, mostly common words (ids 0 to 7) with a few keywords; most keywords come
/// from the document's topic (four topics of eight keywords each) and the others from a random topic. The label is the topic.
/// </summary>
public static class TopicSequences
{
    /// <summary>Tokens per document.</summary>
    public const int Steps = 24;

    /// <summary>Common words, then four topics' keywords.</summary>
    public const int Vocabulary = CommonWords + Topics * KeywordsPerTopic;

    /// <summary>The classes.</summary>
    public const int Topics = 4;

    private const int CommonWords = 8, KeywordsPerTopic = 8;

    // Keywords per document, and how many of them belong to its own topic.
    private const int Keywords = 6, OnTopic = 4;

    /// <summary>One document: its token ids (as Single, the trainer's feature type) and its topic.</summary>
    public sealed class Row
    {
        /// <summary>Token ids, one per step.</summary>
        [VectorType(Steps)]
        public float[] Features { get; set; } = [];

        /// <summary>The topic, 0 to <see cref="Topics"/> - 1.</summary>
        public float Label { get; set; }
    }

    /// <summary><paramref name="count"/> documents, the same for the same <paramref name="seed"/>.</summary>
    public static Row[] Generate(int count, int seed)
    {
        var rng = new Random(seed);
        var rows = new Row[count];
        for (int r = 0; r < count; r++)
        {
            int topic = rng.Next(Topics);
            var tokens = new float[Steps];
            for (int t = 0; t < Steps; t++) tokens[t] = rng.Next(CommonWords);
            // Keywords at distinct random positions: OnTopic from the document's topic, the rest from any topic.
            var positions = Enumerable.Range(0, Steps).OrderBy(_ => rng.Next()).Take(Keywords).ToArray();
            for (int k = 0; k < Keywords; k++)
            {
                int from = k < OnTopic ? topic : rng.Next(Topics);
                tokens[positions[k]] = CommonWords + from * KeywordsPerTopic + rng.Next(KeywordsPerTopic);
            }
            rows[r] = new Row { Features = tokens, Label = topic };
        }
        return rows;
    }
}
