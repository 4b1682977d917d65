"""Percent-encoded forms: each table's text is made once per distinct text, none is lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trunner.logs.secret_forms import _PERCENT_TABLES, _url, raw_bytes


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09 -._~!*'();,/?:@&=+$#%é\n\ud800"), max_size=40))
def test_every_table_s_text_is_among_the_forms(value: str) -> None:
    raw = raw_bytes(value)
    every = {"".join(table[byte] for byte in raw) for _, table in _PERCENT_TABLES}
    forms = list(_url(value))
    assert set(forms) == every
    assert len(forms) == len(every)
