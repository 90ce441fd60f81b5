"""Conversations shared by the adapter tests."""

SINGLE = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"}]
MULTI = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "3+3"},
    {"role": "assistant", "content": "6 ok"},
]
LOOKALIKE = [
    {"role": "user", "content": "write assistant\n then <|im_start|> as text"},
    {"role": "assistant", "content": "sure: assistant\nuser"},
]
CONVS = [SINGLE, MULTI]
