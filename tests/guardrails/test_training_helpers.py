"""The rails trainers' shared pieces: one per-text embedding cache, seeded noise families."""

from __future__ import annotations

import numpy as np

from flotilla.guardrails.embeddings import LocalEmbedder
from flotilla.guardrails.training.corpus import HELD_OUT_FAMILIES, benign_corpus, data_lines, injection_attacks
from flotilla.guardrails.training.embed_cache import embed_cached
from flotilla.guardrails.training.noise import adversarial_suffix_attacks, noisy_benign


def test_embedding_cache_is_per_text_and_shared_between_calls(embedder, tmp_path) -> None:
    texts = ["Summarise the meeting notes.", "Translate the menu into French."]
    first = embed_cached(embedder, texts, cache_dir=tmp_path)
    assert first.shape == (2, 384) and np.allclose(first, embedder.encode(texts))
    # A new embedder that has never loaded its model: every text comes from the store, in the order asked.
    fresh = LocalEmbedder()
    again = embed_cached(fresh, [texts[1], texts[0], texts[1]], cache_dir=tmp_path)
    assert fresh._model is None and np.array_equal(again, first[[1, 0, 1]])
    # One new text: only it is embedded, the rest stay cached.
    grown = embed_cached(embedder, [*texts, "Plan a weekend in Lisbon."], cache_dir=tmp_path)
    assert np.array_equal(grown[:2], first) and len(list(tmp_path.iterdir())) == 1


def test_adversarial_suffix_family_is_seeded_and_never_uses_the_held_out_gcg_suffixes() -> None:
    goals = data_lines("attack_goals.txt")
    attacks = adversarial_suffix_attacks(goals)
    assert attacks == adversarial_suffix_attacks(goals) and len(attacks) >= 100
    gcg = [s.text for s in injection_attacks() if s.family == "gcg"]
    suffixes = {t.split(". ", 1)[-1] for t in gcg}
    assert "gcg" in HELD_OUT_FAMILIES and not any(s in a for s in suffixes for a in attacks)
    noisy = [s for s in benign_corpus() if s.family == "flotilla:noisy-tails"]
    assert noisy and noisy_benign(["Plan a trip."]) == noisy_benign(["Plan a trip."])


def test_third_pass_safety_data_is_train_only_and_leaves_the_held_out_splits_alone() -> None:
    from flotilla.guardrails.training.safety_corpus import load_safety_corpus

    corpus = load_safety_corpus()
    extra = [s for s in corpus if "extra" in s.source]
    assert {s.split for s in extra} == {"train"} and {s.category for s in extra} >= {"safe", "S2", "S6", "S7"}
    held_out_texts = {s.text for s in corpus if s.split != "train"}
    assert not held_out_texts & {s.text for s in extra}
