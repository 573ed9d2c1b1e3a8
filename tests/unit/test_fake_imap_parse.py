"""The fake IMAP server's sequence sets: "*", reversed and merged ranges."""

from __future__ import annotations

import pytest

from gmail_xoauth2.testing._imap_parse import ImapSyntaxError, SequenceSet


@pytest.mark.parametrize(
    ("text", "largest", "members"),
    [
        ("1", 5, [1]),
        ("1:*", 5, [1, 2, 3, 4, 5]),
        ("*", 5, [5]),
        ("5:3,9,12:*,1", 15, [1, 3, 4, 5, 9, 12, 13, 14, 15]),
        ("*:4", 6, [4, 5, 6]),
        ("2:4,3:7,9", 10, [2, 3, 4, 5, 6, 7, 9]),
        ("4,5,6", 10, [4, 5, 6]),
    ],
)
def test_membership(text: str, largest: int, members: list[int]) -> None:
    numbers = SequenceSet.parse(text)
    assert numbers.select(range(largest + 3), largest) == members


def test_a_long_uid_list_is_answered_quickly_and_correctly() -> None:
    # IMAPClient sends UID lists such as "1,2,3,...,5000": every one is a member.
    numbers = SequenceSet.parse(",".join(str(n) for n in range(1, 5001, 2)))
    assert numbers.select(range(1, 5001), 5000) == list(range(1, 5001, 2))


@pytest.mark.parametrize("text", ["0", "1:0", "a", "1,,2", ""])
def test_invalid_sets(text: str) -> None:
    with pytest.raises(ImapSyntaxError):
        SequenceSet.parse(text)
