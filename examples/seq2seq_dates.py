"""Teach a GRU encoder-decoder with attention to read dates: "the 3rd of March, 2021" -> "2021-03-03".

Run from the repository root:

    python examples/seq2seq_dates.py              # about a minute of training
    python examples/seq2seq_dates.py --seconds 300

Each step below is what `minigen train seq2seq` does in full (minigen/training/seq2seq.py), written
out so it can be read top to bottom.
"""
import argparse

import minigen as mg
from minigen.data import Seq2SeqBatches, exact_match, load_task
from minigen.models import Seq2Seq, Seq2SeqConfig
from minigen.plots import attention_table
from minigen.training.loop import fit
from minigen.training.progress import Progress


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training time budget")
    args = parser.parse_args()
    mg.manual_seed(0)

    # 1. The task: (source, target) string pairs and one character vocabulary per side. Token ids
    #    0..3 are <pad>, <bos>, <eos>, <unk>; the characters follow.
    data = load_task("dates", n_train=20000, n_valid=500, n_test=500, seed=0)
    print("a training pair:", data.train[0])

    # 2. The model. A bidirectional GRU reads the source; a GRU decoder writes the target one
    #    character at a time, attending (Bahdanau, additive) over the encoder's outputs.
    config = Seq2SeqConfig(src_vocab_size=len(data.src_vocab), tgt_vocab_size=len(data.tgt_vocab),
                           embedding_size=64, hidden_size=256, bidirectional=True, attention="bahdanau")
    model = Seq2Seq(config, data.src_vocab, data.tgt_vocab)
    print(f"{model.num_parameters():,} parameters")

    # 3. Batches: sources padded with <pad> (the encoder is told each length, so padding never
    #    leaks in), decoder inputs <bos> + target, labels target + <eos> with padding set to -100
    #    so that the loss ignores it. Bucketing groups similar lengths to waste less work on padding.
    batches = Seq2SeqBatches(data.train, data.src_vocab, data.tgt_vocab, batch_size=64, bucket=True)
    optimizer = mg.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    # 4. Training with teacher forcing: at each step the decoder is fed the true previous character.
    #    fit() is the loop every `minigen train` command runs: for each step it asks for the learning
    #    rate and the loss of the next batch, then runs backward, clips the gradient norm to 1 (it
    #    guards against the occasional huge gradient) and updates, until the time budget is used.
    stream = batches.forever()   # epoch after epoch, each reshuffled

    def batch_loss(step):
        batch = next(stream)
        logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])   # (B, T, V)
        loss = model.loss(logits, batch["tgt_out"])                            # cross-entropy
        return loss, int(batch["src_lengths"].sum() + batch["tgt_lengths"].sum()), {}

    fit(optimizer, list(model.parameters()), Progress(max_time=args.seconds), batch_loss,
        schedule=lambda step: 3e-3, grad_clip=1.0)

    # 5. Decoding runs free: the model is fed its own predictions. Greedy takes the best character
    #    each step; beam search keeps the 4 best partial outputs.
    sources = [source for source, _ in data.test]
    targets = [target for _, target in data.test]
    greedy = model.translate(sources)
    print(f"test exact match, greedy: {100 * exact_match(greedy, targets):.1f}%")
    beam = model.translate(sources, num_beams=4)
    print(f"test exact match, beam 4: {100 * exact_match(beam, targets):.1f}%")
    for source in ["the 3rd of March, 2021", "12/25/99", "Sunday, July 4, 1976"]:
        print(f"{source!r:>28} -> {model.translate([source])[0]}")

    # 6. Where the model looked: one row per output character, one column per source character.
    #    The weights of each row sum to 1; the starred cell is the most attended source character.
    ids, mask = model.encode_sources(["the 3rd of March, 2021"])
    out = model.generate(ids, attention_mask=mask, max_length=20, output_attentions=True)
    weights = [a[0] for a in out.attentions]
    print(attention_table(weights, list("the 3rd of March, 2021"),
                          [data.tgt_vocab.id_to_token(i) for i in out.sequences[0, 1:]]))


if __name__ == "__main__":
    main()
