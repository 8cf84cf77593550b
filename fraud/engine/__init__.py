"""The fraud scoring hot path: plain Python with no Django import (like `gateway.engine`).

`transaction` holds the shapes every part agrees on; `history` the user's history store;
`client` the brain client behind its breaker; `admission` the per-tenant burst limit and shedding;
`endpoint` the ASGI handler of `POST /transaction`.
"""
