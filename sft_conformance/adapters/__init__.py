"""Adapters of third-party SFT libraries: built-in targets that drive the real libraries through
their public APIs (transformers, TRL, torchtune).

Every module imports its library lazily, inside methods, so importing this package (or listing the
targets) never imports TRL or torchtune; a target whose library is missing declares ``requires``
and ``install_hint`` and every check reports it skipped.
"""

from __future__ import annotations

_TF = "sft_conformance.adapters.transformers_collators"
_TRL = "sft_conformance.adapters.trl_sft"
_TT = "sft_conformance.adapters.torchtune_collators"
_LIT = "sft_conformance.adapters.litgpt"
_VERL = "sft_conformance.adapters.verl"
_SWIFT = "sft_conformance.adapters.ms_swift"
_LF = "sft_conformance.adapters.llamafactory"
_ORLHF = "sft_conformance.adapters.openrlhf"
_AXO = "sft_conformance.adapters.axolotl"
_TRLT = "sft_conformance.adapters.trl_tools"
_TFT = "sft_conformance.adapters.transformers_tools"
_TC = "sft_conformance.adapters.tinker_cookbook"

REGISTRY: dict[str, str] = {
    # transformers
    "transformers-lm-collator": f"{_TF}:LMCollatorTarget",
    "transformers-lm-collator-pad-eos": f"{_TF}:LMCollatorPadEosTarget",
    "transformers-seq2seq-collator": f"{_TF}:Seq2SeqCollatorTarget",
    "transformers-seq2seq-collator-left": f"{_TF}:Seq2SeqCollatorLeftTarget",
    "transformers-flattening-collator": f"{_TF}:FlatteningCollatorTarget",
    "transformers-flattening-collator-fa-kwargs": f"{_TF}:FlatteningCollatorFlashKwargsTarget",
    "transformers-model-loss": f"{_TF}:ModelLossTarget",
    "transformers-model-loss-no-num-items": f"{_TF}:ModelLossNoNumItemsTarget",
    "transformers-assistant-mask": f"{_TF}:AssistantMaskTarget",
    "transformers-assistant-mask-tools": f"{_TFT}:AssistantMaskToolsTarget",
    # TRL
    "trl-sft-messages": f"{_TRL}:MessagesTarget",
    "trl-sft-prompt-completion": f"{_TRL}:PromptCompletionTarget",
    "trl-sft-assistant-only": f"{_TRL}:AssistantOnlyTarget",
    "trl-sft-assistant-only-eot-outside": f"{_TRL}:AssistantOnlyEotOutsideTarget",
    "trl-sft-assistant-only-no-tags": f"{_TRL}:AssistantOnlyNoTagsTarget",
    "trl-sft-padding-free": f"{_TRL}:PaddingFreeTarget",
    "trl-sft-packing-bfd": f"{_TRL}:PackingBfdTarget",
    "trl-sft-packing-bfd-split": f"{_TRL}:PackingBfdSplitTarget",
    "trl-sft-packing-wrapped": f"{_TRL}:PackingWrappedTarget",
    "trl-sft-tools": f"{_TRLT}:ToolsTarget",
    "trl-sft-tools-assistant-only": f"{_TRLT}:ToolsAssistantOnlyTarget",
    # torchtune
    "torchtune-padded-collate-sft": f"{_TT}:PaddedCollateSFTTarget",
    "torchtune-packed": f"{_TT}:PackedTarget",
    "torchtune-packed-split": f"{_TT}:PackedSplitTarget",
    "torchtune-tools": f"{_TT}:ToolsTarget",
    "torchtune-tools-max-seq-len": f"{_TT}:ToolsMaxSeqLenTarget",
    # LitGPT (tox -e litgpt)
    "litgpt-sft-mask-prompt": f"{_LIT}:MaskPromptTarget",
    "litgpt-sft-default": f"{_LIT}:DefaultTarget",
    # verl (tox -e verl)
    "verl-multiturn-sft": f"{_VERL}:MultiTurnNoPaddingTarget",
    "verl-multiturn-sft-right": f"{_VERL}:MultiTurnRightPaddingTarget",
    "verl-multiturn-sft-tools": f"{_VERL}:MultiTurnToolsTarget",
    "verl-multiturn-sft-tools-ignore-mismatch": f"{_VERL}:MultiTurnToolsIgnoreMismatchTarget",
    # ms-swift (tox -e ms-swift)
    "ms-swift-sft": f"{_SWIFT}:SftTarget",
    "ms-swift-sft-last-round": f"{_SWIFT}:LastRoundTarget",
    "ms-swift-sft-padding-free": f"{_SWIFT}:PaddingFreeTarget",
    "ms-swift-sft-packing": f"{_SWIFT}:PackingTarget",
    "ms-swift-sft-jinja": f"{_SWIFT}:JinjaBackendTarget",
    "ms-swift-sft-tools": f"{_SWIFT}:ToolsTarget",
    "ms-swift-sft-tools-ignore-empty-think": f"{_SWIFT}:ToolsIgnoreEmptyThinkTarget",
    "ms-swift-sft-tools-hermes": f"{_SWIFT}:ToolsHermesLossScaleTarget",
    # LLaMA-Factory (tox -e llamafactory)
    "llamafactory-sft": f"{_LF}:SftTarget",
    "llamafactory-sft-mask-history": f"{_LF}:MaskHistoryTarget",
    "llamafactory-sft-packing": f"{_LF}:PackingTarget",
    "llamafactory-sft-neat-packing": f"{_LF}:NeatPackingTarget",
    "llamafactory-sft-tools": f"{_LF}:ToolsTarget",
    "llamafactory-sft-tools-no-thinking": f"{_LF}:ToolsNoThinkingTarget",
    # OpenRLHF (tox -e openrlhf)
    "openrlhf-sft-multiturn": f"{_ORLHF}:MultiturnTarget",
    "openrlhf-sft": f"{_ORLHF}:SingleTurnTarget",
    "openrlhf-sft-multiturn-tools": f"{_ORLHF}:MultiturnToolsTarget",
    # axolotl (tox -e axolotl)
    "axolotl-chat-template": f"{_AXO}:ChatTemplateTarget",
    "axolotl-chat-template-eos-all": f"{_AXO}:EosAllTarget",
    "axolotl-sample-packing": f"{_AXO}:SamplePackingTarget",
    "axolotl-chat-template-tools": f"{_AXO}:ChatTemplateToolsTarget",
    "axolotl-chat-template-tools-train-tool": f"{_AXO}:ToolRoleTrainedTarget",
    # tinker-cookbook (tox -e tinker-cookbook)
    "tinker-cookbook-qwen3": f"{_TC}:Qwen3Target",
    "tinker-cookbook-qwen3-last": f"{_TC}:Qwen3LastTarget",
    "tinker-cookbook-qwen3-disable-thinking": f"{_TC}:Qwen3DisableThinkingTarget",
    "tinker-cookbook-qwen3-preserve-thinking": f"{_TC}:Qwen3PreserveThinkingTarget",
    "tinker-cookbook-deepseekv3": f"{_TC}:DeepSeekV3Target",
}


#: the libraries of issue 13, each in its own virtualenv (``tox -e NAME``): name -> (distribution,
#: prefix of its targets' names). ``sft-conformance report --library NAME`` runs its targets and
#: writes reports/NAME/.
LIBRARIES: dict[str, tuple[str, str]] = {
    "litgpt": ("litgpt", "litgpt-"),
    "verl": ("verl", "verl-"),
    "ms-swift": ("ms-swift", "ms-swift-"),
    "llamafactory": ("llamafactory", "llamafactory-"),
    "openrlhf": ("openrlhf", "openrlhf-"),
    "axolotl": ("axolotl", "axolotl-"),
    "tinker-cookbook": ("tinker-cookbook", "tinker-cookbook-"),
}


def library_targets(library: str) -> list[str]:
    """The built-in targets of one library of :data:`LIBRARIES`, in registry order."""
    _dist, prefix = LIBRARIES[library]
    return [name for name in REGISTRY if name.startswith(prefix)]
