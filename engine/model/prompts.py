"""Prompt text for LLM user modelling: the paper's Table 6 templates and the continuous-token slots (§2.4.1, B.1)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CT = "<ct>"
"""The placeholder token that stands for one continuous token; its embedding is replaced in inputs_embeds."""

INPUT_TEMPLATES: tuple[str, ...] = (
    "Given the following purchase history:{items}. Predict the {user} preferences.",
    "I find the purchase history list:{items}. I wonder what the {user} will like. Can you help me decide?",
    "Considering the {user} has interacted with{items}. What are the user preferences?",
    "According to what items the {user} has purchased:{items}. Can you describe the user preferences?",
    "By analyzing the {user}'s purchase of{items}, what are the expected preferences of the user?",
    "Given the {user}'s previous interactions with the{items}, what are the user preferences?",
    "Taking into account the {user}'s engagement with the{items}, what are the user potential interests?",
    "In light of the {user}'s interactions with the{items}, what might the user be interested in?",
    "Considering the {user}'s past interactions with the{items}, what are the user likely preferences?",
    "With the {user}'s history of engagement with the{items}, what would the user be inclined to like?",
)
"""Table 6, input prompts 0-9, verbatim ({items} directly follows the preceding word; item_list adds the space)."""

RESPONSE_TEMPLATES: tuple[str, ...] = (
    "Analysing the purchase history, the user may prefer {category} products.",
    "The user might lean towards {category} products based on an analysis of their purchase history.",
    "Category {category} products may be favored by the user upon examination of their purchase history.",
)
"""Table 6, response prompts 0-2, verbatim."""

DEFAULT_INPUT_TEMPLATE = 0
DEFAULT_RESPONSE_TEMPLATE = 0

INPUT_HEADER = "### Input: "
RESPONSE_HEADER = "\n### Response:"

ROLE_PLAY = (
    "You are the expert in {dataset} products, entrusted with the responsibility of recommending the "
    "perfect products to our users.\n"
)
"""The optional role-play preamble of Appendix B.1, used only when a dataset name is given (short prompts by default)."""

MAX_TITLE_CHARS = 60


_YEAR = re.compile(r"\s*\(\d{4}\)$")  # MovieLens' ' (1995)': six tokens for SmolLM2, which splits digits


def trim_title(title: str, max_title_chars: int = MAX_TITLE_CHARS, drop_year: bool = False) -> str:
    """One-line title cut to at most max_title_chars characters, with no placeholder text inside (drop_year: without
    a trailing '(dddd)')."""
    text = " ".join(str(title).replace(CT, " ").split())
    if drop_year:
        text = _YEAR.sub("", text) or text
    if len(text) > max_title_chars:
        text = text[:max_title_chars].rstrip()
    return text


def item_slot(title: str, k: int, max_title_chars: int = MAX_TITLE_CHARS, drop_year: bool = False,
              category: str | None = None) -> str:
    """An item as 'title <ct>…<ct>' with k placeholders, or 'title (category) <ct>…<ct>' given its category (cut to
    max_title_chars too; left out where it only repeats the title, as LastFM's artist does)."""
    name = trim_title(title, max_title_chars, drop_year)
    label = trim_title(category, max_title_chars) if category else ""
    if label and label.casefold() != name.casefold():
        name = f"{name} ({label})"
    return f"{name} {CT * k}"


def user_slot(k: int) -> str:
    """The user as 'user <ct>…<ct>' with k placeholders."""
    return f"user {CT * k}"


def item_list(history_titles: Sequence[str], k: int, max_title_chars: int = MAX_TITLE_CHARS,
              drop_year: bool = False, categories: Sequence[str | None] | None = None) -> str:
    """The {items} text: ' a <ct><ct>, b <ct><ct>' (leading space, comma separated; each title followed by its
    category in parentheses where categories are given)."""
    labels = categories if categories is not None else [None] * len(history_titles)
    if len(labels) != len(history_titles):
        raise ValueError(f"{len(history_titles)} titles but {len(labels)} categories")
    return " " + ", ".join(item_slot(t, k, max_title_chars, drop_year, c) for t, c in zip(history_titles, labels))


def build_prompt(input_template_id: int, history_titles: Sequence[str], k: int, dataset_name: str | None = None,
                 *, max_title_chars: int = MAX_TITLE_CHARS, drop_year: bool = False,
                 categories: Sequence[str | None] | None = None) -> str:
    """'### Input: <template with user and items>\\n### Response:'; a dataset_name adds the role-play preamble;
    categories (one per title) are shown after the titles."""
    if not 0 <= input_template_id < len(INPUT_TEMPLATES):
        raise ValueError(f"input template id {input_template_id} is not in 0..{len(INPUT_TEMPLATES) - 1}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    body = INPUT_TEMPLATES[input_template_id].format(
        user=user_slot(k), items=item_list(history_titles, k, max_title_chars, drop_year, categories))
    preamble = ROLE_PLAY.format(dataset=" ".join(dataset_name.split())) if dataset_name else ""
    return f"{preamble}{INPUT_HEADER}{body}{RESPONSE_HEADER}"


def build_response(response_template_id: int, category: str) -> str:
    """The target response naming the item's category."""
    if not 0 <= response_template_id < len(RESPONSE_TEMPLATES):
        raise ValueError(f"response template id {response_template_id} is not in 0..{len(RESPONSE_TEMPLATES) - 1}")
    return RESPONSE_TEMPLATES[response_template_id].format(category=" ".join(str(category).split()))


def leading_categories(categories: Sequence[object], n: int = 2) -> str | None:
    """The n most frequent category parts of a history's items ('|'-separated parts counted one by one; ties by
    name), '|'-joined most frequent first: what a 'history' response says the user prefers; None without any."""
    counts: dict[str, int] = {}
    for category in categories:
        if isinstance(category, str):
            for part in {p.strip() for p in category.split("|")} - {""}:
                counts[part] = counts.get(part, 0) + 1
    if not counts:
        return None
    return "|".join(sorted(counts, key=lambda part: (-counts[part], part))[:n])


def prompt_history(train_items: Sequence[int], history: str, max_history: int, seed: int, user: int) -> np.ndarray:
    """The items a user's inference prompt shows (before fitting its length), from the train items in time order: the
    latest max_history in time order (history 'recent'), or a seeded shuffle of them (history 'random', the paper; a
    repeated item stays repeated, as the user bought it twice)."""
    if history == "recent":
        return np.array(train_items[-max_history:], dtype=np.int64)  # a writable copy
    rng = np.random.default_rng([seed, user])
    return rng.permutation(np.sort(np.asarray(train_items, dtype=np.int64)))[:max_history]  # sorted: order-free input


def placeholder_count(n_items: int, k: int) -> int:
    """Number of placeholders in a prompt with n_items history items: k for the user plus k per item."""
    return k * (1 + n_items)


def user_before_items(input_template_id: int) -> bool:
    """Whether the template names the user before the items (only templates 0 and 1 put the items first)."""
    template = INPUT_TEMPLATES[input_template_id]
    return template.index("{user}") < template.index("{items}")
