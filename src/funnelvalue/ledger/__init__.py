"""The ledger: the single source of truth for "was this conversion already sent?".

``store`` holds the Ledger and the questions the pipeline asks it; ``dedupe`` the policy
(pure, over frames); ``runs`` a run's life and every write; ``requests`` the asynchronous
requests; ``views`` what status and the report read; ``database`` opening and migrating;
``schema`` the tables and migrations; ``driver`` the bulk reads and writes that keep a
million-row run fast; ``locking`` one run per account at a time; ``prune`` forgetting what
Google can no longer take.
"""

from funnelvalue.ledger.schema import metadata, schema_migrations
from funnelvalue.ledger.store import Ledger
from funnelvalue.ledger.views import RunSummary

__all__ = ["Ledger", "RunSummary", "metadata", "schema_migrations"]
