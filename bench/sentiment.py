"""Part of `make bench` (bench/suite.py): sentiment scoring speed on headlines, each scorer beside a peer in the same run.

- The offline default (`VaderScorer`: VADER + finance terms) on the project's labelled headlines, repeated to 256
  texts, beside plain VADER (`SentimentIntensityAnalyzer.polarity_scores`, no finance terms) on the same texts.
  Gate: both score every text in [-1, 1], and on texts with no finance term both compounds agree (1e-12).
- A BERT-base-sized classifier (BertConfig's defaults: 12 layers, hidden 768, 12 heads; three labels) built from a
  config with random weights and a local vocabulary (nothing is downloaded), scored through traderbot's
  `TransformerScorer` at several batch sizes, beside the plain transformers `pipeline("text-classification")` call on
  the same texts and batch size (1, 8 and 32). Random weights cost the same arithmetic as trained ones: the speed is
  FinBERT's. Gate: our p(positive) - p(negative) and label equal the pipeline's (1e-5) on every text.
Time per call over all the texts (bench/harness.py: interleaved, 5 repetitions, median and spread); no goal.
`quick`: 16 texts, a 2-layer BERT (hidden 128), batch 8, 2 repetitions (a smoke test, not numbers to quote).
CPU only, torch's default thread count. Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import argparse, os, string, sys, tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = "sentiment"
SMALL = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)   # quick


def tiny_vocab(texts: list[str]) -> list[str]:
    "BERT's special tokens and every lower-cased word of `texts` (a real vocabulary's size does not change the cost much)."
    import re
    words = sorted({w for t in texts for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", t.lower())})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


def build_bert_base(folder: Path, texts: list[str], **size) -> None:
    "A BERT-base-sized sequence classifier (or `size`: BertConfig fields) with random weights and its tokenizer, saved to `folder`."
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocab(texts)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    cfg = BertConfig(vocab_size=tok.vocab_size, num_labels=3, id2label={0: "positive", 1: "negative", 2: "neutral"},
                     label2id={"positive": 0, "negative": 1, "neutral": 2}, **size)
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def vader_gate(ours, plain, texts: list[str]) -> str:
    "Raise unless both score every text in [-1, 1] and agree where no finance term is present."
    a = ours.score(texts).score.to_numpy()
    b = np.array([plain.polarity_scores(t)["compound"] for t in texts])
    if not (np.abs(a) <= 1).all() or not (np.abs(b) <= 1).all(): raise AssertionError("sentiment vader: a compound outside [-1, 1]")
    same = np.array([ours.prepare(t) == t and not any(w.strip(string.punctuation).lower() in ours.terms for w in t.split()) for t in texts])
    gap = float(np.abs(a - b)[same].max()) if same.any() else 0.0
    if gap > 1e-12: raise AssertionError(f"sentiment vader: plain VADER and VaderScorer differ by {gap:.1e} on a text without finance terms")
    return f"every compound in [-1, 1]; on the {int(same.sum())} of {len(texts)} texts without finance terms equal to plain VADER (gap {gap:.1e})"


def vader_case(texts: list[str], reps: int) -> dict:
    "VaderScorer beside plain VADER."
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    from traderbot.news.sentiment import VaderScorer
    ours, plain = VaderScorer(), SentimentIntensityAnalyzer()
    return harness.compare(BENCH, f"VADER, {len(texts)} headlines", lambda: ours.score(texts),
                           lambda: [plain.polarity_scores(t) for t in texts], ours_name="VaderScorer (+ finance terms)",
                           peer_name="plain VADER polarity_scores", reps=reps, gate=lambda: vader_gate(ours, plain, texts))


def bert_gate(ours, peer, texts: list[str]) -> str:
    "Raise unless our score (p(positive) - p(negative)) and label equal the pipeline's on every text."
    a = ours.score(texts)
    p = [{d["label"]: d["score"] for d in row} for row in peer(texts)]
    b = np.array([d["positive"] - d["negative"] for d in p])
    gap = float(np.abs(a.score.to_numpy() - b).max())
    labels = [max(d, key=d.get) for d in p]
    if gap > 1e-5 or list(a.label) != labels: raise AssertionError(f"sentiment bert: scores differ by {gap:.1e} or labels differ")
    return f"score and label equal to the pipeline's on {len(texts)} texts: worst score gap {gap:.1e} (<= 1e-5)"


def bert_cases(heads: list[str], texts: list[str], sizes: list[int], reps: int, **size) -> list[dict]:
    "TransformerScorer beside the transformers pipeline, per batch size."
    from transformers import pipeline
    from traderbot.news.sentiment import TransformerScorer
    import torch
    out, what = [], "BERT-base" if not size else f"BERT ({size['num_hidden_layers']} layers, hidden {size['hidden_size']})"
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        build_bert_base(Path(d), heads, **size)
        for b in sizes:
            ours = TransformerScorer(d, batch_size=b, progress=False)
            peer = pipeline("text-classification", model=d, tokenizer=d, top_k=None, device="cpu", batch_size=b)
            out.append(harness.compare(BENCH, f"{what}, batch {b}, {len(texts)} headlines", lambda: ours.score(texts), lambda: peer(texts),
                                       ours_name="TransformerScorer", peer_name="transformers pipeline", reps=reps,
                                       gate=lambda: bert_gate(ours, peer, texts)))
    return out


def measure(quick: bool) -> list[dict]:
    "VADER and the BERT-base classifier at batch 1, 8 and 32 on 256 headlines; small with `quick`."
    os.environ["HF_HUB_OFFLINE"] = "1"
    from traderbot.news.sentiment import load_headlines
    heads = load_headlines().text.tolist()
    n, sizes, reps, size = (16, [8], 2, SMALL) if quick else (256, [1, 8, 32], 5, {})
    texts = (heads * (n // len(heads) + 1))[:n]
    return [vader_case(texts, reps)] + bert_cases(heads, texts, sizes, reps, **size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 texts, a small BERT: a smoke test of the bench, not numbers to quote")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
