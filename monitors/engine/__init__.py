"""The check engine: runs monitors' checks, outside the ORM (issue 11 item 2). No Django here."""
