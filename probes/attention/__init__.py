"""Probe 2: self-attention heads as word pairs, and the instruction-verb statistic (METHODS §2).

Reading order:
* ``pairs.py``: the word space and GloVe thresholds, word vectors, per-head neurons, each neuron's
  kept pairs and a head's pair list (§2.1-2.5);
* ``probe.py``: ``AttentionProbe`` (cache units = layer ranges) and its ``AttentionResult``;
* ``statistic.py``: Table 3's per-verb shares (information) and the verdict's cluster bootstrap
  over head clusters (§2.6);
* ``io.py``: the authors' pairs TSV, its byte-split parts and multi-model files.
"""

from shiftcheck.probes.attention.pairs import (AttentionConfig, NeuronPairs, WordSpace, energy_order, head_activations,
                                               head_pairs, neuron_pairs, random_heads, thresholds, word_space,
                                               word_vectors)
from shiftcheck.probes.attention.probe import CODE_VERSION, AttentionProbe, AttentionResult, head_pair_lists
from shiftcheck.probes.attention.statistic import (FINDING, MIN_HEAD_SUPPORT, N_RESAMPLES, ClusterBootstrap,
                                                   ClusterCounts, VerbShares, cluster_bootstrap, cluster_counts,
                                                   frequency_stratum, group_layers, group_report, heads_changed,
                                                   layer_group, matching_weights, mean_share, pair_list_change,
                                                   table3_numbers, verb_shares, verb_verdict)

__all__ = [
    "AttentionConfig", "NeuronPairs", "WordSpace", "energy_order", "head_activations", "head_pairs", "neuron_pairs",
    "random_heads", "thresholds", "word_space", "word_vectors", "CODE_VERSION", "AttentionProbe", "AttentionResult",
    "head_pair_lists", "FINDING", "MIN_HEAD_SUPPORT", "N_RESAMPLES", "ClusterBootstrap", "ClusterCounts",
    "VerbShares", "cluster_bootstrap", "cluster_counts", "frequency_stratum", "group_layers", "group_report",
    "heads_changed", "layer_group", "matching_weights", "mean_share", "pair_list_change", "table3_numbers",
    "verb_shares", "verb_verdict",
]
