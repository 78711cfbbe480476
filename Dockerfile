# The demo site's image: the web processes, the sweeper and the migration step all run it
# (see docker-compose.yml). Build from the repository root: docker build -t chat-ws-demo .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=stbd_project.settings

WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY manage.py ./
COPY chat_ws ./chat_ws
COPY stbd_project ./stbd_project
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput -v0

RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "stbd_project.asgi:application"]
