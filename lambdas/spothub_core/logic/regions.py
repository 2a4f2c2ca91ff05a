"""What `GET /regions` answers: the spot finder's ranking now, every worker region with its facts.

The finder is asked as the batch supervisor asks it (synchronously, its own function): a survey that
ranks every region on its own merits (`share_regions`: a region holding a replica is not left out for
it, the answer says who holds it). The finder only reads, so asking changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from spothub_core.errors import DependencyUnavailable
from spothub_core.models.api import RegionExclusion, RegionState, RegionsView, RegionView
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest, SurveyedRegion

SURVEY = FindRequest(share_regions=True, survey=True)


def read_regions(find: Callable[[FindRequest], FindAnswer]) -> RegionsView:
    """Raises DependencyUnavailable when the finder cannot be asked or fails (EC2 not answering)."""
    answer = find(SURVEY)
    if answer.regions is None:
        raise DependencyUnavailable("the spot finder answered without its survey: is it the same version?")
    return RegionsView(
        at=answer.observed_at,
        best=answer.best,
        reason=answer.reason,
        instance_types=answer.instance_types,
        regions=[_view(region) for region in answer.regions],
    )


def _view(region: SurveyedRegion) -> RegionView:
    exclusion = region.exclusion
    return RegionView(
        region=region.region,
        rank=region.rank,
        state=_state(region),
        placement_score=region.placement_score,
        spot_price=region.spot_price,
        spot_zone=region.spot_zone,
        spot_instance_type=region.spot_instance_type,
        on_demand_price=None,  # the finder does not price on-demand (no pricing call)
        excluded=RegionExclusion(
            until=exclusion.until,
            kind=exclusion.kind,
            error=exclusion.reason.removeprefix(f"{exclusion.kind}: ") if exclusion.kind else exclusion.reason,
        )
        if exclusion
        else None,
        denied=region.denied,
        allowed=region.allowed,
        replicas=region.replicas,
        reason=region.reason,
    )


def _state(region: SurveyedRegion) -> RegionState:
    """The first that applies, in the ranking's own order."""
    if region.denied:
        return RegionState.DENIED
    if not region.allowed:
        return RegionState.NOT_ALLOWED
    if region.exclusion is not None:
        return RegionState.EXCLUDED
    return RegionState.OK
