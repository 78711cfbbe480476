# The demo site's image: the web processes, the sweeper and the migration step all run it
# (see docker-compose.yml). Build from the repository root: docker build -t chat-ws-demo .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=stbd_project.settings \
    SQLITE_PATH=/data/db.sqlite3

WORKDIR /app

# Only what the demo runs; the test and tool pins of requirements.txt stay out of the image.
COPY requirements/runtime.txt ./requirements/
RUN pip install -r requirements/runtime.txt

COPY manage.py ./
COPY chat_ws ./chat_ws
COPY stbd_project ./stbd_project
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v0

# The code stays root-owned and read-only; the app user writes only /data (SQLite when no
# DATABASE_URL is set; mount a volume there to keep it).
RUN useradd --create-home --uid 10001 app \
    && mkdir /data \
    && chown app:app /data
USER app

EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "stbd_project.asgi:application"]
