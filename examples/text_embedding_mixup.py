"""Mixup for text through token embeddings: ManifoldMixup on a small Transformer, padding masks combined.

Run:  python examples/text_embedding_mixup.py --epochs 10
Fast: python examples/text_embedding_mixup.py --fast

Token ids cannot be mixed, their embeddings can. ``mixlab.ManifoldMixup`` mixes, per step, the
output of a layer picked at random from the embedding and the first encoder layer (forward
hooks, no change to the model). Two padded sentences are mixed position by position, so the
mixed sentence has a real token wherever either source has one: after the mixing point the
key-padding mask becomes ``pad[i] & pad[index[i]]`` (padded only where both are padded),
while the layers before it keep each sentence's own mask.

The data are synthetic, generated with a seeded generator (no download): sentences of 7 to
24 tokens from a 200-word vocabulary with 10 "positive" and 10 "negative" words; the label
says which kind occurs more often (ties never generated). Token 0 is padding.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mixlab  # noqa: E402
from _loop import compare, example_parser, parse, print_results  # noqa: E402

VOCAB, MAX_LEN = 200, 24
POSITIVE, NEGATIVE = range(1, 11), range(11, 21)


def make_sentences(n: int, *, generator: torch.Generator):
    """Token ids ``(n, MAX_LEN)`` int64, padding mask ``(n, MAX_LEN)`` bool (True = pad), labels ``(n,)``."""
    g = generator
    lengths = torch.randint(7, MAX_LEN + 1, (n,), generator=g)
    ids = torch.randint(21, VOCAB, (n, MAX_LEN), generator=g)  # neutral words
    n_pos = torch.randint(0, 4, (n,), generator=g)
    n_neg = torch.randint(0, 4, (n,), generator=g)
    n_neg = torch.where(n_neg == n_pos, (n_neg + 1) % 4, n_neg)  # no ties
    for i in range(n):
        slots = torch.randperm(int(lengths[i]), generator=g)
        k_pos, k_neg = int(n_pos[i]), int(n_neg[i])
        ids[i, slots[:k_pos]] = torch.randint(POSITIVE.start, POSITIVE.stop, (k_pos,), generator=g)
        ids[i, slots[k_pos:k_pos + k_neg]] = torch.randint(NEGATIVE.start, NEGATIVE.stop, (k_neg,), generator=g)
    pad = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]  # (n, T)
    ids = ids.masked_fill(pad, 0)
    return (ids, pad), (n_pos > n_neg).long()


class MaskedMeanPool(nn.Module):
    """Mean over the real tokens; takes the mask by keyword so ManifoldMixup can hand it the union."""

    def forward(self, h, src_key_padding_mask=None):  # h: (B, T, D)
        keep = (~src_key_padding_mask).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


class TextClassifier(nn.Module):
    def __init__(self, dim: int = 32):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, MAX_LEN, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.pool = MaskedMeanPool()
        self.head = nn.Linear(dim, 2)

    def forward(self, ids, src_key_padding_mask):
        h = self.emb(ids) + self.pos[:, : ids.shape[1]]  # (B, T, D)
        h = self.enc(h, src_key_padding_mask=src_key_padding_mask)
        return self.head(self.pool(h, src_key_padding_mask=src_key_padding_mask))


def main(argv=None) -> dict:
    p = example_parser(__doc__, epochs=10, alpha=0.4)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    args = parse(p, argv)
    n_train, n_test, epochs = (800, 400, 3) if args.fast else (args.train, args.test, args.epochs)
    g = torch.Generator().manual_seed(args.seed)
    train, test = make_sentences(n_train, generator=g), make_sentences(n_test, generator=g)
    criterion = nn.CrossEntropyLoss()
    mixers = {}

    def plain(model, xb, yb):
        ids, pad = xb
        return criterion(model(ids, src_key_padding_mask=pad), yb)

    def mixed(model, xb, yb):
        if model not in mixers:  # one ManifoldMixup per model: it holds the model and the layer choice
            mixers[model] = mixlab.ManifoldMixup(
                model, layers=["emb", "enc.layers.0"], alpha=args.alpha, mask_kwarg="src_key_padding_mask",
                mask_convention="padding", generator=torch.Generator().manual_seed(args.seed))
        ids, pad = xb
        logits, target = mixers[model](ids, yb, src_key_padding_mask=pad)
        return target.loss(criterion, logits)

    results = compare(TextClassifier, train, test, {"baseline": plain, "manifold": mixed}, epochs=epochs,
                      batch_size=64, lr=2e-3, seed=args.seed)
    print_results(f"synthetic sentences: {n_train} train / {n_test} test, {epochs} epochs", results)
    return results


if __name__ == "__main__":
    main()
