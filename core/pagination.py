from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    """`?page=N&page_size=M`, 50 by default and never more than 500 a page."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
