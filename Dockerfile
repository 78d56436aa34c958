# One image for the worker, Flower and the emulator; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN pip install --no-cache-dir "uv>=0.5"
COPY pyproject.toml uv.lock README.md ./
COPY cards cards
COPY worker worker
COPY producers producers
COPY stripe_emulator stripe_emulator
COPY celeryconfig.py ./
RUN uv pip install --system --no-cache ".[worker,flower,gateway,tracing,emulator]"
RUN useradd --system --uid 10001 cards
USER cards
CMD ["celery", "-A", "worker", "worker", "-l", "info"]
