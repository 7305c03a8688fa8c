"""The names on the wire that the REST service and its clients share: routes, form fields, headers.

The service (``flexguard.service``) answers on these; the scanner's ``--server`` client, the
benchmarks and the tests call them. Written once here so a client never keeps its own copy of the
service's constants (and nothing but the CLI and the tests has to import the service to learn them).
"""

SCORE_ROUTE = "/v1/score"
MODEL_ROUTE = "/v1/model"
# The multipart field that carries photos (repeat it per photo), and the threshold overrides.
PHOTO_FIELD = "files"
REVIEW_THRESHOLD_FIELD = "review_threshold"
BLOCK_THRESHOLD_FIELD = "block_threshold"
THRESHOLD_FIELDS = (REVIEW_THRESHOLD_FIELD, BLOCK_THRESHOLD_FIELD)


def category_field(threshold_field: str, category: str) -> str:
    """One category's own threshold, e.g. ``review_threshold[luxury_travel]`` (query parameter or form field)."""
    return f"{threshold_field}[{category}]"
# Where a key goes; ``Authorization: Bearer <key>`` works too.
API_KEY_HEADER = "X-API-Key"
