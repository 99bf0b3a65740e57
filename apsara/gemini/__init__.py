"""Everything that knows Gemini. The only package that imports google.genai."""
