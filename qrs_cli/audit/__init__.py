"""Rendering for ``qrs audit``: plain text (``text``) and the self-contained HTML page (``html``).

The work itself (verifying, computing the report) lives in :mod:`qr_sampler.provenance`, which
returns data; these modules only turn that data into lines or a page.
"""
