"""The reading pipeline between the bus owners and the outbox writer.

driver SampleBatch -> normalize (scale, offset, unit, quality) -> rules see every reading ->
report by exception (deadband, max interval) -> sink (the OutboxWriter).
"""

from citynerve.gateway.pipeline._pipeline import NoRules, Pipeline, PipelineCounters, ReadingSink, RulesHook

__all__ = ["NoRules", "Pipeline", "PipelineCounters", "ReadingSink", "RulesHook"]
