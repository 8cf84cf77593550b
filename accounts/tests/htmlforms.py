"""Reads an HTML form the way a browser submits it, so tests post the admin's real forms."""

from __future__ import annotations

from html.parser import HTMLParser

FormData = dict[str, list[str]]


class _FormReader(HTMLParser):
    def __init__(self, form_id: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.data: FormData = {}
        self._select: str | None = None
        self._select_multiple = False
        self._select_seen: list[str] = []
        self._textarea: str | None = None
        self._text: list[str] = []

    def _add(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        if tag == "form" and (self.form_id is None or attr.get("id") == self.form_id):
            self.inside = True
        if not self.inside:
            return
        name = attr.get("name")
        if tag == "input" and name:
            kind = attr.get("type", "text").lower()
            if kind in ("submit", "button", "image", "file", "reset"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in attr:
                    self._add(name, attr.get("value", "on"))
                return
            self._add(name, attr.get("value", ""))
        elif tag == "select" and name:
            self._select, self._select_multiple, self._select_seen = name, "multiple" in attr, []
            self._first_option: str | None = None
        elif tag == "option" and self._select is not None:
            value = attr.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in attr:
                self._select_seen.append(value)
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self.inside:
            return
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            chosen = self._select_seen
            if not chosen and not self._select_multiple and self._first_option is not None:
                chosen = [self._first_option]  # a browser submits the first option
            for value in chosen:
                self._add(self._select, value)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # HTML drops one newline right after <textarea>.
            text = "".join(self._text)
            self._add(self._textarea, text[1:] if text.startswith("\n") else text)
            self._textarea = None


def form_data(html: str, form_id: str | None = None) -> FormData:
    """The fields the form `form_id` (else the first form) would submit, as {name: [values]}."""
    reader = _FormReader(form_id)
    reader.feed(html)
    return reader.data


def field_named(data: FormData, suffix: str, value: str) -> str:
    """The one field whose name ends with `suffix` and whose current value is `value`
    (an inline's row: `memberships-0-user` = "3")."""
    names = [name for name, values in data.items() if name.endswith(suffix) and value in values]
    assert len(names) == 1, (suffix, value, names)
    return names[0]
