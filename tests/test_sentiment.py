"""traderbot.news.sentiment through the real transformers loading and inference path.

No weights ship with traderbot, so each test builds a tiny BERT from a `BertConfig` and a local vocab (random weights,
seeded), saves it to a temp folder and loads it through `TransformerScorer` with `local_files_only=True`. Two models list
their classes in different orders, to show labels follow `config.id2label` names, not indices.
"""
from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError
from traderbot.news.sentiment import TransformerScorer, VaderScorer, make_scorer, score_file

pytest.importorskip("torch")
pytest.importorskip("transformers")

WORDS = "acme beats misses estimates cuts raises dividend guidance shares plunge surge record profit loss files for bankruptcy names new cfo the a of".split()
TEXTS = ["Acme beats estimates", "Acme misses estimates and cuts guidance", "Acme names new CFO",
         "the shares plunge", "record profit for Acme raises dividend", "Acme files for bankruptcy", "a",
         "shares surge " * 40]  # the last one is longer than the model's window: truncated, not an error
ORDER_A = {0: "positive", 1: "negative", 2: "neutral"}  # ProsusAI/finbert's order
ORDER_B = {0: "Neutral", 1: "Positive", 2: "Negative"}  # finbert-tone's order, capitalised


def build_model(path, id2label, seed=0):
    "Save a tiny random BERT sequence classifier with `id2label` and its tokenizer to `path`."
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=3,
                     id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(seed)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"a": build_model(root / "a", ORDER_A, seed=0), "b": build_model(root / "b", ORDER_B, seed=1)}


@pytest.fixture
def no_network(monkeypatch):
    "Any attempt to open a socket fails the test."
    def refuse(*a, **k): raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def reference_probs(path, texts):
    "Class probabilities straight from transformers, one text at a time, in the model's class order."
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        return np.concatenate([torch.softmax(net(**tok([t], truncation=True, max_length=64, return_tensors="pt")).logits, -1).numpy()
                               for t in texts]), net.config.id2label


@pytest.mark.parametrize("which", ["a", "b"])
def test_labels_follow_id2label_names_not_indices(models, which, no_network):
    sc = TransformerScorer(models[which], batch_size=3, progress=False)
    df = sc.score(TEXTS)
    p, id2label = reference_probs(models[which], TEXTS)
    name = {i: n.lower() for i, n in id2label.items()}
    idx = {v: k for k, v in name.items()}
    assert list(df.columns) == ["text", "label", "score"] and list(df.text) == TEXTS
    assert list(df.label) == [name[int(k)] for k in p.argmax(axis=1)]
    np.testing.assert_allclose(df.score, p[:, idx["positive"]] - p[:, idx["negative"]], atol=1e-5)
    assert df.score.between(-1, 1).all()


def test_the_two_orders_really_differ(models):
    "Guard for the test above: if both models put positive at the same index, it would prove nothing."
    a, b = TransformerScorer(models["a"], progress=False), TransformerScorer(models["b"], progress=False)
    assert a.labels == {0: "positive", 1: "negative", 2: "neutral"}
    assert b.labels == {0: "neutral", 1: "positive", 2: "negative"}


def test_batching_matches_one_by_one(models):
    batched = TransformerScorer(models["b"], batch_size=4, progress=False).score(TEXTS)
    single = TransformerScorer(models["b"], batch_size=1, progress=False).score(TEXTS)
    assert list(batched.label) == list(single.label)
    np.testing.assert_allclose(batched.score, single.score, atol=1e-5)


def test_empty_input_and_score_file(models, tmp_path):
    sc = make_scorer(models["a"], batch_size=2, progress=False)
    assert isinstance(sc, TransformerScorer)
    assert sc.score([]).empty and list(sc.score([]).columns) == ["text", "label", "score"]
    (tmp_path / "in.txt").write_text("Acme beats estimates\n\n   \nAcme files for bankruptcy\n")
    out = score_file(tmp_path / "in.txt", tmp_path / "out.csv", sc)
    back = pd.read_csv(tmp_path / "out.csv")
    assert list(back.text) == ["Acme beats estimates", "Acme files for bankruptcy"]
    assert list(back.label) == list(out.label) and back.label.isin(["positive", "negative", "neutral"]).all()


def test_missing_model_says_how_to_get_one(tmp_path, no_network):
    with pytest.raises(ConfigError) as e:
        TransformerScorer(tmp_path / "finbert")
    msg = str(e.value)
    assert str(tmp_path / "finbert") in msg and "huggingface-cli download ProsusAI/finbert --local-dir models/finbert" in msg
    assert "[sentiment] model = models/finbert" in msg and "\n" not in msg


def test_unmappable_labels_are_refused_by_name(tmp_path):
    path = build_model(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ConfigError, match="LABEL_0"):
        TransformerScorer(path, progress=False)


def test_offline_env_is_set_and_default_is_vader(models):
    import os
    TransformerScorer(models["a"], progress=False)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert isinstance(make_scorer(None), VaderScorer) and isinstance(make_scorer(""), VaderScorer)
