"""`GreedyNER` (guardrails/ner_greedy.py) sets the entities spaCy's own `ner.pipe` sets, token for
token, on every labelled text the project has and on the edge cases of its transition rules."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import spacy
import yaml
from spacy.tokens import Doc, Span

from flotilla.guardrails.ner_greedy import GreedyNER
from flotilla.guardrails.pii import SPACY_MODEL
from tests.support.pii_set import SPLITS, load

ROOT = Path(__file__).resolve().parents[2]
EDGE_CASES = (
    "", " ", "\n\n", "John", "  John Smith  ", "Smith", "Dear Mr. Brown,\n\n  Paid by Alice Wu on 3 May.",
    "Angela Merkel\n\nmet Emmanuel Macron in Paris", "New York City", "Barack Obama", "x " * 400,
    "Invoice from Northwind Office Supplies Ltd. to Contoso GmbH, Leeds LS1 4DY, United Kingdom.",
)


@pytest.fixture(scope="module")
def nlp():
    return spacy.load(SPACY_MODEL, exclude=["parser"])


def _texts() -> list[str]:
    texts = [doc.text for split in SPLITS for doc in load(split)]
    texts += [case["text"] for case in yaml.safe_load((ROOT / "tests/data/heldout_invoices.yaml").read_text())["invoices"]]
    texts += [(ROOT / "graphs/samples/invoice.txt").read_text(), *EDGE_CASES]
    words = " ".join(texts).split()
    rng = random.Random(7)  # word salad: capitalised words at odd places, entities cut at odd ends
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(200)]
    return texts


def _entities(docs: list[Doc]) -> list[list[tuple[int, str]]]:
    return [[(t.ent_iob, t.ent_type_) for t in doc] for doc in docs]


def test_greedy_decoding_sets_the_entities_spacy_sets(nlp) -> None:
    ner = nlp.get_pipe("ner")
    texts = _texts()
    want = list(ner.pipe((nlp.make_doc(text) for text in texts), batch_size=64))
    greedy = GreedyNER(ner, batch_size=64)
    assert greedy.supported
    have = list(greedy.pipe(nlp.make_doc(text) for text in texts))
    assert len(have) == len(texts)
    for text, a, b in zip(texts, want, have):
        assert [(e.start, e.end, e.label_) for e in b.ents] == [(e.start, e.end, e.label_) for e in a.ents], text
    assert _entities(have) == _entities(want)
    assert sum(len(doc.ents) for doc in have) > 1000  # the texts do hold entities, of many kinds
    assert {"PERSON", "ORG", "GPE", "DATE", "MONEY"} <= {e.label_ for doc in have for e in doc.ents}


def test_sentence_starts_bound_entities_as_in_spacy(nlp) -> None:
    ner = nlp.get_pipe("ner")
    words = "Yesterday John Smith met Mary Jones of Acme Corporation in New York City".split()
    for cut in range(1, len(words)):
        starts = [i == cut or i == 0 for i in range(len(words))]
        want = ner(Doc(nlp.vocab, words=words, sent_starts=starts))
        [have] = GreedyNER(ner).pipe([Doc(nlp.vocab, words=words, sent_starts=starts)])
        assert [(e.start, e.end, e.label_) for e in have.ents] == [(e.start, e.end, e.label_) for e in want.ents], cut


def test_preset_entities_go_through_spacy(nlp) -> None:
    ner = nlp.get_pipe("ner")
    doc = nlp.make_doc("Ask Zorblax about Mary Jones in Leeds.")
    doc.ents = [Span(doc, 1, 2, label="PERSON")]
    [have] = GreedyNER(ner).pipe([doc])
    assert (1, 2, "PERSON") in [(e.start, e.end, e.label_) for e in have.ents]
