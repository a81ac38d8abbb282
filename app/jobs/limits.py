"""What an explanation method costs a worker, and so who may ask for it, and how many at once.

Cheap: one forward and one backward pass (or a few, shared by a bundle), under a second per image on a CPU.
Expensive: the path, sampling, reference-distribution and perturbation methods, which run the network tens to
thousands of times per image: 5-40 s per image on a CPU for the fundus model (docs/explanations-idrid.md,
"s / image"), and minutes on a full-size photograph, holding a worker that every reader's study shares.

Readers may ask only for cheap methods; a coordinator or an admin for at most LUMEN_MAX_EXPENSIVE_JOBS_PER_USER
jobs with an expensive method queued or running at once. Every method of models/explain/names.py is in exactly
one of the two sets (tests/app/jobs/test_limits.py).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.errors import Forbidden, TooMany
from app.tables import Job, JobState, Role, User

# When a user at their quota may ask again (Retry-After): about one expensive job's run on a worker.
RETRY_AFTER_SECONDS = 60

CHEAP_METHODS: frozenset[str] = frozenset(
    {
        "gradient",
        "saliency",
        "input_x_gradient",
        "deconvnet",
        "guided_backprop",
        "guided_gradcam",
        "cam",
        "gradcam",
        "gradcam_pp",
        "deeplift",
        "lrp_epsilon",
        "lrp_composite",
    }
)

EXPENSIVE_METHODS: frozenset[str] = frozenset(
    {
        # Path and noise methods: n_steps or n_samples passes of the network.
        "integrated_gradients",
        "expressive_gradients",
        "smoothgrad",
        "vargrad",
        "gradient_shap",
        # DeepLIFT against a distribution of baselines: one pass per baseline.
        "deeplift_shap",
        # Perturbation methods: a forward pass per patch, superpixel subset or coalition.
        "occlusion",
        "feature_ablation",
        "shapley_sampling",
        "kernel_shap",
        "lime",
    }
)


def expensive(methods: list[str]) -> list[str]:
    """The expensive methods among `methods`, sorted."""
    return sorted(set(methods) & EXPENSIVE_METHODS)


def expensive_jobs_in_flight(session: Session, *, user_id: int) -> int:
    """How many jobs this user asked for that compute an expensive method and are queued or running."""
    in_flight = session.scalars(
        select(Job.methods).where(Job.requested_by_id == user_id, Job.state.in_((JobState.queued, JobState.running)))
    )
    return sum(1 for methods in in_flight if expensive(methods))


def check(session: Session, *, methods: list[str], user_id: int, role: Role) -> None:
    """Forbidden for a reader asking for an expensive method; TooMany (429, Retry-After) for a coordinator or
    an admin who has max_expensive_jobs_per_user expensive jobs queued or running already."""
    wanted = expensive(methods)
    if not wanted:
        return
    if role == Role.reader:
        raise Forbidden(
            f"readers may request only single-pass methods ({', '.join(sorted(CHEAP_METHODS))}); "
            f"{', '.join(wanted)} must be requested by a coordinator or an admin"
        )
    limit = get_settings().max_expensive_jobs_per_user
    # One user's requests one at a time (their row locked until the request commits): two sent at once cannot
    # both take the last place.
    session.execute(select(User.id).where(User.id == user_id).with_for_update())
    in_flight = expensive_jobs_in_flight(session, user_id=user_id)
    if in_flight >= limit:
        raise TooMany(
            f"{in_flight} expensive explanation jobs of yours are queued or running, the most allowed at once "
            f"(LUMEN_MAX_EXPENSIVE_JOBS_PER_USER={limit}): ask again when one has finished",
            retry_after=RETRY_AFTER_SECONDS,
        )
