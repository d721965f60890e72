"""Scrape a service's Prometheus metrics port and compare samples by name and labels."""

from __future__ import annotations

from collections.abc import Mapping

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Return every sample the metrics endpoint at `url` serves, keyed by name and labels."""
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    """Return every sample of a text exposition, keyed by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value, 0 when absent (a labelled counter appears at its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """Return how much one sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def deltas(before: Samples, after: Samples, name: str, label: str) -> Mapping[str, float]:
    """Return the non-zero growth of every series of `name`, by the value of `label`."""
    grown: dict[str, float] = {}
    for (sample, labels), now in after.items():
        if sample == name:
            change = now - before.get((sample, labels), 0.0)
            if change:
                key = dict(labels).get(label, "")
                grown[key] = grown.get(key, 0.0) + change
    return grown
