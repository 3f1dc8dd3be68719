# Multi-stage: a static binary on a minimal, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/riverhub .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/riverhub /riverhub
USER nonroot:nonroot
EXPOSE 8080
ENV RIVERHUB_ADDR=:8080
ENTRYPOINT ["/riverhub"]
