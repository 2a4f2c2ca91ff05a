"""The replay benchmark: placement and failover policies against recorded spot capacity traces.

traces (folders → aligned series) → view (what a policy may know now) → simulator (market, fleet,
events) → accounting (availability, cost, counts) → report (all policies, JSON and table). The
policies live in `policies/`; `spothub` among them runs production's ranking code.
"""
