"""OpenAI's Chat Completions API on top of Gemini, for clients that already speak it.

`request` reads an OpenAI request body into what Gemini needs (contents, settings,
functions), `tool_ids` carries Gemini's thought signatures inside tool-call ids,
`answers` writes OpenAI's completion, chunk and error shapes, and `completions`
runs one stateless turn. Nothing is stored; the views are in `apsara/api/openai.py`.
"""
