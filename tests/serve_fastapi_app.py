"""A FastAPI app: pydantic-core (a PyO3 module) cannot load in an own-GIL
sub-interpreter, so interloop serve needs --worker-kind process (or --workers 1)."""
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict:
    return {"item_id": item_id, "pid_kind": "process"}


@app.post("/items")
async def create_item(item: Item) -> Item:
    return item
