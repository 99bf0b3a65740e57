"""OpenAI's Chat Completions API on top of Gemini, for clients that already speak it.

`request` reads an OpenAI request body into what Gemini needs (contents, settings,
functions), `signatures` carries Gemini's thought signatures in tool-call ids and picture URLs,
`answers` writes OpenAI's completion, chunk and error shapes, and `completions`
runs one stateless turn. Nothing is stored; the views are in `apsara/api/openai.py`.
"""
