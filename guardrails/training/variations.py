"""Templated variations: benign hard negatives that use jailbreak vocabulary, and jailbreak templates
filled with goals. Deterministic (no randomness), so retraining gives the same corpus.

The benign templates put trigger words (ignore, override, pretend, act as, administrator,
instructions, forget, bypass) into ordinary work and everyday requests: the classifier must learn
that the *words* are not the attack, the redirection of the model is.
"""

from __future__ import annotations

import base64
from itertools import cycle, islice

__all__ = ["benign_trigger_variations", "fill_templates"]

_BENIGN_TEMPLATES = (
    "Ignore the {noise} in {data} and {task}.",
    "Please ignore {noise}; just {task}.",
    "Override the default {setting} in {thing} with {value}.",
    "How do I override the {setting} in {thing}?",
    "Pretend you are a {role} and {roletask}.",
    "Imagine you are a {role}; {roletask}.",
    "Act as a {role} and {roletask}.",
    "As the administrator of {system}, how do I {admin}?",
    "Ask the {system} administrator to {admin}.",
    "Follow the instructions in {doc} and {task}.",
    "Rewrite the instructions in {doc} so a new colleague can follow them.",
    "Forget {noise} for now and {task}.",
    "Disregard {noise}; the final version is attached. Please {task}.",
    "How can I bypass {obstacle} when {situation}?",
    "You are now my {role}; {roletask}.",
)
_SLOTS = {
    "noise": ["the typos", "the header row", "the empty lines", "my earlier draft", "the duplicate entries",
              "the outliers", "the footnotes", "the cancelled orders", "the formatting", "the previous version"],
    "data": ["this table", "the survey results", "the sales export", "my notes", "the attached spreadsheet",
             "the meeting transcript", "the sensor log", "the reading list"],
    "task": ["summarise the rest in three bullet points", "tell me the average", "list the main themes",
             "translate the remainder into French", "write a short recap for the team", "find the longest entry",
             "suggest a title", "count the entries per month", "draft a reply", "check the totals"],
    "setting": ["font", "page margins", "time zone", "colour scheme", "line spacing", "currency format",
                "date format", "keyboard shortcut", "print layout", "language"],
    "thing": ["the report template", "my Word document", "the slide master", "the calendar app", "VS Code",
              "our invoice layout", "the spreadsheet", "the website theme"],
    "value": ["Arial 11", "2.5 cm", "Europe/Paris", "the company blue", "1.5 lines", "EUR", "ISO 8601",
              "Ctrl+Shift+S"],
    "role": ["tour guide in Lisbon", "history teacher", "friendly chef", "job interviewer", "museum guide",
             "personal trainer", "travel agent", "librarian", "Spanish tutor", "customer calling about a refund",
             "park ranger", "science journalist"],
    "roletask": ["describe the main sights to visitors", "quiz me on the Renaissance", "explain how to make risotto",
                 "ask me three interview questions", "describe a famous painting", "suggest a short workout",
                 "recommend a hotel for a family", "recommend three books for a teenager",
                 "correct my sentences as I write them", "let me practise my support replies",
                 "explain why we should stay on the trail", "explain black holes in simple words"],
    "system": ["our shared drive", "the Wi-Fi router", "the school's Moodle site", "our Slack workspace",
               "the company wiki", "the family computer", "our CRM", "the mailing list"],
    "admin": ["add a new user", "reset a forgotten password", "change the storage quota", "remove a former employee",
              "turn on two-factor authentication", "restore a deleted folder", "export the member list",
              "set up a guest account"],
    "doc": ["the README", "the assembly leaflet", "the onboarding guide", "the style guide", "the recipe card",
            "the installation manual", "the exam brief", "the travel checklist"],
    "obstacle": ["the traffic jam on the A9", "a stuck zipper", "the queue at passport control", "a frozen app",
                 "the low-water bridge", "the long security line"],
    "situation": ["driving to Munich", "packing in a hurry", "flying with kids", "my phone restarts", "cycling to work",
                  "catching an early flight"],
}


def _fill(template: str, i: int) -> str:
    """The i-th filling of a template: slot values rotate at coprime-ish strides, so fillings differ."""
    out = template
    for k, (name, values) in enumerate(_SLOTS.items()):
        out = out.replace("{" + name + "}", values[(i * (k + 3) + k) % len(values)])
    return out


def benign_trigger_variations(per_template: int = 12) -> list[str]:
    texts = [_fill(t, i) for t in _BENIGN_TEMPLATES for i in range(per_template)]
    return list(dict.fromkeys(texts))  # drop accidental duplicates, keep order


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
# Token smuggling: the goal written so that no word of it appears as such ({goal_b64} etc. in a template).
_GOAL_FORMS = {
    "{goal_b64}": lambda g: base64.b64encode(g.encode()).decode(),
    "{goal_leet}": lambda g: g.translate(_LEET),
    "{goal_hyphen}": lambda g: "-".join(g),
    "{goal_spaced}": lambda g: " ".join(g.replace(" ", "/")),
    "{goal_reversed}": lambda g: g[::-1],
}


def _smuggle(template: str, goal: str) -> str:
    for slot, form in _GOAL_FORMS.items():
        template = template.replace(slot, form(goal))
    return template.replace("{goal}", goal)


def fill_templates(templates: list[str], goals: list[str], per_template: int = 6) -> list[str]:
    """Each template with `per_template` goals, starting at a different goal for each template."""
    out = []
    for j, template in enumerate(templates):
        start = (j * 5) % len(goals)
        for goal in islice(cycle(goals[start:] + goals[:start]), per_template if "{goal" in template else 1):
            text = _smuggle(template, goal)
            out.append(text[0].upper() + text[1:])
    return list(dict.fromkeys(out))
