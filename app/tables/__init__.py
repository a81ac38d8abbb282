"""SQLAlchemy ORM tables: the data model of DESIGN.md. Names are the contract.

`core` holds users, studies, jobs, predictions and reads; `reader_studies` the study designs, cases,
readers and assignments; `onboarding` the models users bring, on their way in. Import tables from here:
`from app.tables import Study`.
"""

from app.tables.core import *  # noqa: F403
from app.tables.core import _enum, utcnow  # noqa: F401  (used by the reader-study tables)
from app.tables.onboarding import *  # noqa: F403
from app.tables.reader_studies import *  # noqa: F403
