"""The strings a mapping-table regex matches, listed from the pattern text (interop/regex_strings.py):
complete on the official checkpoint's keys, nothing listed that the regex refuses, and one clear
error for a construct outside the subset the tables use."""

import os
import re

import pytest

import _pth_writer as writer

from ppdet_dac.interop import tables
from ppdet_dac.interop.regex_strings import pattern_strings

KEY_LIST = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "official_state_dict_keys.txt"
)


def _numbers(keys):
    return range(max(int(n) for key in keys for n in re.findall(r"\d+", key)) + 1)


def test_every_official_key_is_listed_by_the_rule_that_matches_it():
    """Each official R50 key that a rule of the official table matches is among the strings
    listed for that rule's pattern, and every listed string is matched by the pattern."""
    keys = [key for key, _, _ in writer.read_key_list(KEY_LIST)]
    numbers = _numbers(keys)
    rules = tables.official_dac_rules(keys)
    matched = 0
    for pattern, _, _ in rules:
        regex = re.compile(pattern)
        listed = pattern_strings(pattern, numbers, ())
        assert all(regex.fullmatch(s) for s in listed), pattern
        wanted = [key for key in keys if regex.fullmatch(key)]
        assert set(wanted) <= set(listed), (pattern, sorted(set(wanted) - set(listed))[:5])
        matched += len(wanted)
    # every key but the BN step counters and the decoder's tied twins is some rule's
    ignored = [
        k
        for k in keys
        if "num_batches_tracked" in k or re.fullmatch(tables.OFFICIAL_DAC_ALIASES[0][0], k)
    ]
    assert matched >= len(keys) - len(ignored)


def test_texts_and_optional_items_in_pattern_order():
    """``.+`` takes the given texts, ``?`` lists the item absent first, alternatives and sets
    keep their written order (the order the inverse tables are built in)."""
    assert pattern_strings(r"(.+\.)?n", range(0), ("a", "b")) == ["n", "a.n", "b.n"]
    assert pattern_strings(r"x(?P<p>b|a)[21]", range(0), ()) == ["xb2", "xb1", "xa2", "xa1"]
    assert pattern_strings(r"l\d+\.(?:w|b)", range(2), ()) == ["l0.w", "l0.b", "l1.w", "l1.b"]
    assert pattern_strings(r"k[0-2\d]", range(0), ())[:4] == ["k0", "k1", "k2", "k0"]


@pytest.mark.parametrize(
    "pattern, what",
    [
        (r"a*", "the quantifier '*'"),
        (r"a{2}", "the quantifier '{'"),
        (r"\w+", r"the escape '\w'"),
        (r"[^a]", "a negated character set"),
        (r"(?=a)", "the group extension '(?'"),
        (r"^a", "the construct '^'"),
        (r"a.b", "the construct '.'"),
        (r"(a", "an unterminated group"),
        (r"a)", "an unmatched ')'"),
    ],
)
def test_constructs_outside_the_subset_are_named(pattern, what):
    with pytest.raises(
        ValueError,
        match=re.escape(f"cannot invert a table rule with {what}")
        + r" at position \d+ of "
        + re.escape(repr(pattern)),
    ):
        pattern_strings(pattern, range(2), ())
