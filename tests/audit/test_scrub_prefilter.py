"""The scrubber's word pre-filter never lets a credential shape through that the regex alone would catch."""

from __future__ import annotations

import random
import string

import pytest

from flotilla.audit.sanitize import REDACTED, Sanitizer, _SECRET_VALUE

SHAPES = [
    "Bearer abcdefgh12345", "basic QWxhZGRpbjpvcGVu", "token  abcdefghij", "Authorization: xyz123456", "api_key=abcdef123",
    "X-API-KEY: 'abcdef123'", "access-token = zzzzzz999", "secret: hunter2222", "PASSWORD=abcdefg",
    "sk-proj-ABCDEFGHIJKLMNOP1234", "ghp_ABCDEFGHIJKLMNOPQRSTUV12", "xoxb-1234567890ab", "AKIAABCDEFGHIJKLMNOP",
    "AIza" + "A" * 32, "eyJabcdefghij.abcdefghij.abcdefghij",
    # Letters re.IGNORECASE takes for ASCII ones (long s, Kelvin sign, dotless and dotted i)
    "\u017fecret: hunter2222", "to\u212aen abcdefghijk", "author\u0131zation: abcdef123", "author\u0130zation: abcdef123",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_credential_shape_is_still_removed(shape: str) -> None:
    text = f"a long reply about invoices {shape} and more text after it"
    scrubbed = Sanitizer("full")._scrub(text)
    assert REDACTED in scrubbed and scrubbed == _SECRET_VALUE.sub(REDACTED, text)


def test_the_prefilter_agrees_with_the_regex_on_random_text() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + " _-:=.'\"\u017f\u0131\u0130\u212a"
    sanitizer = Sanitizer("full")
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for word in ("token ", "secret=", "sk-", "AKIA", "eyJ", "bearer "):
            if rng.random() < 0.2:
                text += word + "".join(rng.choice(alphabet) for _ in range(30))
        assert sanitizer._scrub(text) == _SECRET_VALUE.sub(REDACTED, text), text
