"""``flexguard scan``: score whole folders of photos into a resumable JSONL/CSV file and an HTML report.

The auditors' tool. ``walk`` finds the photos, a scorer (``local``, ``ray_engine`` or ``server``) turns
paths into rows (``rows``) through one in-flight batching loop (``inflight``), ``journal`` appends them
and knows what an interrupted run already did, ``report`` writes the reviewer's HTML, and ``runner``
wires them together. It scores through ``flexguard.inference``, never through the HTTP service's code.
"""
