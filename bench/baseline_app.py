"""The bare FastAPI baselines: ``python -m bench.baseline_app --port N``.

``POST /const`` returns a constant without reading the body; ``POST /model`` parses the body into
a small pydantic model. Served like ``ciclo run`` serves Ciclo: uvicorn, one worker, default loop
and HTTP parser, no log configuration.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI, status
from pydantic import BaseModel, Field


class SmallEvent(BaseModel):
    type: str = Field(min_length=1, max_length=200)
    customer_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/const", status_code=status.HTTP_202_ACCEPTED)
async def const() -> dict[str, str]:
    return {"status": "accepted"}


@app.post("/model", status_code=status.HTTP_202_ACCEPTED)
async def model(event: SmallEvent) -> dict[str, str]:
    return {"status": "accepted", "type": event.type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None, lifespan="on")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
