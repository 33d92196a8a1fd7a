"""`make bench`: sentiment scoring speed, headlines per second, each beside a peer in the same run.

- The offline default (`VaderScorer`: VADER + finance terms) on the project's labelled headlines, repeated to `--n` texts.
- A BERT-base-sized classifier (BertConfig's defaults: 12 layers, hidden 768, 12 heads; three labels) built from a
  config with random weights and a local vocabulary (nothing is downloaded), scored through traderbot's
  `TransformerScorer` at several batch sizes, beside the plain transformers `pipeline("text-classification")` call on
  the same texts and batch size. Random weights cost the same arithmetic as trained ones: the speed is FinBERT's.
CPU only, torch's default thread count (this machine: 2 cores). Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import argparse, os, sys, tempfile, time
from pathlib import Path


def tiny_vocab(texts: list[str]) -> list[str]:
    "BERT's special tokens and every lower-cased word of `texts` (a real vocabulary's size does not change the cost much)."
    import re
    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", t.lower())})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


def build_bert_base(folder: Path, texts: list[str]) -> None:
    "A BERT-base-sized sequence classifier with random weights and its tokenizer, saved to `folder`."
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab(texts)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    cfg = BertConfig(vocab_size=tok.vocab_size, num_labels=3, id2label={0: "positive", 1: "negative", 2: "neutral"},
                     label2id={"positive": 0, "negative": 1, "neutral": 2})
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def rate(fn, n: int) -> float:
    "Texts per second of one call of `fn` over `n` texts (after one warm-up call on a few)."
    t = time.perf_counter(); fn(); return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="texts per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from traderbot.news.sentiment import TransformerScorer, VaderScorer, load_headlines
    heads = load_headlines().text.tolist()
    texts = (heads * (args.n // len(heads) + 1))[:args.n]
    vader = VaderScorer()
    vader.score(texts[:8])
    rows = [("VaderScorer (offline default)", "-", rate(lambda: vader.score(texts), len(texts)), None)]
    with tempfile.TemporaryDirectory() as d:
        build_bert_base(Path(d), heads)
        from transformers import pipeline
        for b in args.batches:
            ours = TransformerScorer(d, batch_size=b, progress=False)
            ours.score(texts[:b])
            peer = pipeline("text-classification", model=d, tokenizer=d, top_k=None, device="cpu", batch_size=b)
            peer(texts[:b])
            with torch.inference_mode():
                r_ours = rate(lambda: ours.score(texts), len(texts))
                r_peer = rate(lambda: peer(texts), len(texts))
            rows.append((f"BERT-base TransformerScorer", str(b), r_ours, r_peer))
    print(f"sentiment scoring speed, {time.strftime('%Y-%m-%d %H:%M')} on this machine ({torch.get_num_threads()} torch threads), "
          f"{len(texts)} headlines (the project's labelled set, repeated)")
    print(f"{'scorer':38s} {'batch':>5s} {'headlines/s':>12s} {'transformers pipeline (peer)':>30s} {'ratio':>6s}")
    for name, b, r, p in rows:
        print(f"{name:38s} {b:>5s} {r:12.1f} {('%.1f' % p) if p else '':>30s} {('%.2fx' % (r / p)) if p else '':>6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
