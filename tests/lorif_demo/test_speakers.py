"""Parser version 2's speaker names and turns, on small hand-made plays."""

from __future__ import annotations

from lorif_demo.corpora.shakespeare import Speech
from lorif_demo.corpora.speakers import canonical, personae_words, refine_play

HEADER = """HAMLET, PRINCE OF DENMARK

PERSONS REPRESENTED.

Claudius, King of Denmark.
Hamlet, Son to the former, and Nephew to the present King.
Polonius, Lord Chamberlain.
Marcellus, Officer.
Bernardo, Officer.
Players.
Two Clowns, Grave-diggers.
Messengers.

ACT I.

Hor.
Not in the list.
""".splitlines()


def speech(speaker: str, text: str) -> Speech:
    return Speech("hamlet", "Hamlet", "I", "I", speaker, text)


def test_persons_list_words_stop_at_the_first_act():
    words = personae_words(HEADER)
    assert {"HAMLET", "POLONIUS", "KING", "PLAYERS", "CLOWNS"} <= words
    assert "HOR" not in words and "NOT" not in words
    assert personae_words(["ACT I.", "Ham.", "Hi."]) == set()  # no persons list: nothing


def test_labels_become_the_names_they_abbreviate():
    words = personae_words(HEADER)
    assert canonical("Ham", words) == "HAMLET"
    assert canonical("Pol", words) == "POLONIUS"
    assert canonical("King", words) == "KING"  # a word of the list stays as it is
    assert canonical("I Play", words) == "FIRST PLAYER"  # ordinal, plural role made singular
    assert canonical("Mess", words) == "MESSENGER"
    assert canonical("First Clown", words) == "FIRST CLOWN"  # not "CLOWNS"
    assert canonical("Hor", words) == "HOR"  # abbreviates nothing in the list
    assert canonical("Ma", words) == "MA"  # too short to expand
    assert canonical("MRS. PAGE", words) == "MRS. PAGE"
    assert canonical("Glou", set(), "lear") == "GLOSTER"  # spelled otherwise in the list


def test_turns_inside_a_speech_are_split_and_remember_their_origin():
    speeches = [
        speech("Ham", "Hold you the watch to-night?\nMar. and Ber.\nWe do, my lord."),
        speech("Pol", "My lord, I will.\nHAMLET. Words, words, words.\nMarcellus. Not a name"),
        speech("Mar", "Hamlet. A line that ends in his name is not a turn."),
        speech("Ber", "Who's there?"),
    ]
    out = refine_play(speeches, HEADER)
    got = [(origin, s.speaker, s.text) for origin, s in out]
    assert got == [
        (0, "HAMLET", "Hold you the watch to-night?"),
        (0, "MARCELLUS AND BERNARDO", "We do, my lord."),
        (1, "POLONIUS", "My lord, I will."),
        (1, "HAMLET", "Words, words, words.\nMarcellus. Not a name"),
        (2, "MARCELLUS", "Hamlet. A line that ends in his name is not a turn."),
        (3, "BERNARDO", "Who's there?"),
    ]
