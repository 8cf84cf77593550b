"""The request log's pipeline (SPEC 3, gateway step 10): the proxy's `on_complete` appends each
`RequestRecord` to a bounded in-memory queue (`queue`), and a writer task per web process
(`writer`) turns them into rows (`rows`) and writes them in batches (`backends`: COPY on
PostgreSQL, `bulk_create` elsewhere), into daily partitions (`partitions`). `pipeline` builds and
wires the lot from the settings. docs/request-log.md tells the whole story.
"""
