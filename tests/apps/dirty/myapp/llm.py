"""The seed guide's LLMApp with the model replaced by a fixed token list (the
tests have no network and no model). Same actions: generate (sync
generator) and generate_async (async generator).

A prompt of the form "wait:<path> ..." makes the app yield its first token,
then wait until <path> exists before the rest: the tests use it to see the
first token arrive while the generator is still running.
"""
import asyncio
import os
import time

from gunicorn.dirty import DirtyApp


class FakePipeline:
    def __call__(self, prompt, stream=True):
        for word in ("Hello", ",", " world", "!"):
            yield {"generated_text": word}


class LLMApp(DirtyApp):
    def init(self):
        self.generator = FakePipeline()

    def _gate(self, prompt):
        if prompt.startswith("wait:"):
            return prompt[5:].split()[0]
        return None

    def generate(self, prompt):
        """Sync streaming - yields tokens."""
        gate = self._gate(prompt)
        for i, token in enumerate(self.generator(prompt, stream=True)):
            if i == 1 and gate:
                deadline = time.monotonic() + 30
                while not os.path.exists(gate):
                    if time.monotonic() > deadline:
                        raise TimeoutError("gate file never appeared")
                    time.sleep(0.01)
            yield token["generated_text"]

    async def generate_async(self, prompt):
        """Async streaming - yields tokens."""
        gate = self._gate(prompt)
        for i, token in enumerate(self.generator(prompt, stream=True)):
            if i == 1 and gate:
                deadline = time.monotonic() + 30
                while not os.path.exists(gate):
                    if time.monotonic() > deadline:
                        raise TimeoutError("gate file never appeared")
                    await asyncio.sleep(0.01)
            yield token["generated_text"]

    def close(self):
        pass
